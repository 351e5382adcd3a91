import assert from "node:assert/strict";
import { TransportError } from "../transport.ts";
import { SMALL_BYTES_PER_CONNECTION, SmallFileGate } from "./small_file_gate.ts";

const ROOM = SMALL_BYTES_PER_CONNECTION;

/** Whether `promise` has settled by the end of this turn's microtasks. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("SmallFileGate lets in a window's worth per connection up, first come first served", async () => {
  let connections = 2;
  const gate = new SmallFileGate(() => connections);
  const first = await gate.enter(ROOM);
  const second = await gate.enter(ROOM);
  const third = gate.enter(ROOM / 2);
  const fourth = gate.enter(1);
  assert.equal(await settled(third), false, "two connections hold two windows");
  assert.equal(await settled(fourth), false, "a small one waits behind the earlier one");
  first();
  first(); // Twice gives back once.
  assert.equal(await settled(third), true);
  assert.equal(await settled(fourth), true);
  const fifth = gate.enter(ROOM);
  assert.equal(await settled(fifth), false);
  connections = 3;
  gate.wake();
  assert.equal(await settled(fifth), true, "a third connection up takes another window");
  second();
});

Deno.test("SmallFileGate lets a file larger than the window in alone, and refuses waiters once closed", async () => {
  const gate = new SmallFileGate(() => 0);
  const large = await gate.enter(3 * ROOM);
  const waiting = gate.enter(1);
  gate.close(new TransportError("closed", "connection"));
  await assert.rejects(waiting, /closed/);
  await assert.rejects(gate.enter(1), /closed/);
  large();
});
