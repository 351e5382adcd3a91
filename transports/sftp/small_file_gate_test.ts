import assert from "node:assert/strict";
import { TransportError } from "../transport.ts";
import { MIN_SMALL_BYTES, SMALL_BYTES_PER_CONNECTION, SmallFileGate } from "./small_file_gate.ts";

const ROOM = SMALL_BYTES_PER_CONNECTION;

/** Whether `promise` has settled by the end of this turn's microtasks. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("SmallFileGate lets in a share per connection up, first come first served", async () => {
  let connections = 5;
  assert.ok(5 * ROOM > MIN_SMALL_BYTES, "five shares are more than the floor");
  const gate = new SmallFileGate(() => connections);
  const shares = [];
  for (let i = 0; i < 5; i++) shares.push(await gate.enter(ROOM));
  const half = gate.enter(ROOM / 2);
  const tiny = gate.enter(1);
  assert.equal(await settled(half), false, "five connections hold five shares");
  assert.equal(await settled(tiny), false, "a small one waits behind the earlier one");
  shares[0]();
  shares[0](); // Twice gives back once.
  assert.equal(await settled(half), true);
  assert.equal(await settled(tiny), true);
  const last = gate.enter(ROOM);
  assert.equal(await settled(last), false);
  connections = 6;
  gate.wake();
  assert.equal(await settled(last), true, "a sixth connection up takes another share");
});

Deno.test("SmallFileGate lets a file larger than the window in alone, and refuses waiters once closed", async () => {
  const gate = new SmallFileGate(() => 0);
  const large = await gate.enter(MIN_SMALL_BYTES + ROOM);
  const waiting = gate.enter(1);
  gate.close(new TransportError("closed", "connection"));
  await assert.rejects(waiting, /closed/);
  await assert.rejects(gate.enter(1), /closed/);
  large();
});

Deno.test("SmallFileGate keeps a stream's worth in flight when one connection is up", async () => {
  const gate = new SmallFileGate(() => 1);
  const first = await gate.enter(ROOM);
  const second = gate.enter(MIN_SMALL_BYTES - ROOM);
  assert.equal(await settled(second), true, "one connection holds more than its share");
  const third = gate.enter(1);
  assert.equal(await settled(third), false);
  first();
  assert.equal(await settled(third), true);
});
