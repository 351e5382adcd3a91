import assert from "node:assert/strict";
import { AnswerRate, type Lane, LOGIN_PARTS, placePart } from "./part_placement.ts";

const MiB = 1 << 20;
/** Bytes per millisecond of `n` MiB/s. */
const mibPerS = (n: number) => n * MiB / 1000;

function lane(state: Lane["state"], pendingBytes: number, rate?: number): Lane {
  return { state, pendingBytes, rate };
}

Deno.test("placePart keeps the least busy connection until one has shown its rate", () => {
  const slow = lane("up", 0);
  const fast = lane("up", 4 * MiB);
  assert.equal(placePart([slow, fast], slow, 2 * MiB, 0), slow);
});

Deno.test("placePart keeps a slow connection busy while the file has much to come", () => {
  // wan, mid-file: 0.8 MiB/s would end a 2 MiB part in 2.5 s; the 40 MiB still to come
  // keep the link busy for longer at 5 MiB/s, so the slow stream adds its rate.
  const slow = lane("up", 0, mibPerS(0.8));
  const fast = lane("up", 2 * MiB, mibPerS(4.2));
  assert.equal(placePart([slow, fast], slow, 2 * MiB, 40 * MiB), slow);
});

Deno.test("placePart keeps a part where it ends before what the others carry drains", () => {
  // lossy, mid-window: the slow stream ends 512 KiB in 3.3 s, later than all that is known
  // could end at the rate of all (2.7 s), but the slowest of the others drains its 1 MiB in 5 s.
  const slow = lane("up", 0, mibPerS(0.15));
  const fast = lane("up", 512 << 10, mibPerS(0.4));
  const loaded = lane("up", 1 << 20, mibPerS(0.2));
  assert.equal(placePart([slow, fast, loaded], slow, 512 << 10, 0), slow);
  // Behind 1 MiB of its own, it would end at 7.5 s: the fast one ends it at 2.5 s.
  const queued = lane("up", 1 << 20, mibPerS(0.2));
  assert.equal(placePart([queued, fast, loaded], queued, 512 << 10, 0), fast);
});

Deno.test("placePart gives a last part to the connection that ends it soonest", () => {
  const slow = lane("up", 0, mibPerS(0.8));
  const fast = lane("up", 2 * MiB, mibPerS(4.2));
  const other = lane("up", 3 * MiB, mibPerS(4.2));
  // On the slow one: 2.5 s; all that is known ends in (7 MiB) / 9.2 MiB/s = 0.76 s.
  assert.equal(placePart([slow, fast, other], slow, 2 * MiB, 0), fast);
});

Deno.test("placePart counts a connection not measured yet at the mean rate, a login dearer", () => {
  const slow = lane("up", 0, mibPerS(0.5));
  const fresh = lane("up", 0);
  const measured = lane("up", 4 * MiB, mibPerS(4));
  // fresh: 1 MiB at the mean 2.25 MiB/s, sooner than behind the 4 MiB on the fast one.
  assert.equal(placePart([slow, measured, fresh], slow, 1 * MiB, 0), fresh);
  const login = lane("login", 0);
  // A login costs LOGIN_PARTS parts more: (1 + 2) MiB at 2.25 MiB/s = 1.33 s, against 1.25 s.
  assert.equal(LOGIN_PARTS, 2);
  assert.equal(placePart([slow, measured, login], slow, 1 * MiB, 0), measured);
  // Behind 6 MiB on the fast one: 1.75 s; the login is sooner.
  const busy = lane("up", 6 * MiB, mibPerS(4));
  assert.equal(placePart([slow, busy, login], slow, 1 * MiB, 0), login);
});

Deno.test("placePart never moves a part to a stalled connection or one that may not log in", () => {
  const slow = lane("up", 0, mibPerS(0.1));
  const stalled = lane("none", 0, mibPerS(100));
  const barred = lane("none", 0);
  assert.equal(placePart([slow, stalled, barred], slow, 1 * MiB, 0), slow);
});

Deno.test("AnswerRate is the bytes answered over the time busy, once 64 KiB were", () => {
  const rate = new AnswerRate();
  rate.busy(0);
  rate.answered(32 << 10);
  assert.equal(rate.bytesPerMs(100), undefined, "32 KiB is too little to tell");
  rate.answered(96 << 10);
  assert.equal(rate.bytesPerMs(100), (128 << 10) / 100);
  assert.equal(
    rate.bytesPerMs(200),
    (128 << 10) / 200,
    "time busy counts while nothing is answered",
  );
  rate.idle(200);
  assert.equal(rate.bytesPerMs(10_000), (128 << 10) / 200, "time idle does not");
  rate.busy(10_000);
  rate.answered(MiB);
  assert.equal(rate.bytesPerMs(10_300), (MiB + (128 << 10)) / 500);
});
