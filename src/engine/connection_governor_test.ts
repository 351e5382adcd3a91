import assert from "node:assert/strict";
import { ConnectionGovernor, type GovernorOptions } from "./connection_governor.ts";

/**
 * Drives a governor against a model link for `seconds`: `rate(open)` bytes
 * per ms flow while busy, and connections asked for open `openDelayMs`
 * later. Returns the targets it chose, in order, without repeats.
 */
function drive(
  rate: (open: number) => number,
  options: Partial<GovernorOptions> & { seconds: number; openDelayMs?: number; busy?: boolean },
): { governor: ConnectionGovernor; targets: number[] } {
  const governor = new ConnectionGovernor({ max: 16, start: 2, ...options });
  const targets = [governor.target];
  let open = 0;
  let bytes = 0;
  let targetSince = 0;
  for (let now = 0; now <= options.seconds * 1000; now += 500) {
    if (now - targetSince >= (options.openDelayMs ?? 1000)) open = governor.target;
    const target = governor.tick(now, bytes, options.busy ?? true, open);
    if (target !== targets.at(-1)) {
      targets.push(target);
      targetSince = now;
      if (target < open) open = target; // fewer take effect at once
    }
    bytes += rate(open) * 500;
  }
  return { governor, targets };
}

Deno.test("connections double while each doubling raises the rate, up to the cap", () => {
  // A lossy link: every stream carries the same, whatever the count.
  const { governor, targets } = drive((open) => 250 * open, { seconds: 60 });
  assert.deepEqual(targets.slice(0, 4), [2, 4, 8, 16]);
  assert(governor.target >= 8, `ended at ${governor.target}`);
});

Deno.test("connections that add nothing are given back, and held there", () => {
  // A fast link the CPU limits: more connections carry the same.
  const { governor, targets } = drive(() => 100_000, { seconds: 50, holdMs: 60_000 });
  assert.deepEqual(targets, [2, 4, 2]);
  assert.deepEqual(governor.target, 2);
});

Deno.test("after the hold, the count is tried again", () => {
  const { targets } = drive(() => 100_000, { seconds: 100, holdMs: 20_000 });
  assert.deepEqual(targets.slice(0, 5), [2, 4, 2, 4, 2]);
});

Deno.test("the link's limit is found: gains stop where the link is full", () => {
  // 2 Mbit/s per stream on a 17.6 Mbit/s link: 9 streams fill it.
  const { governor, targets } = drive((open) => Math.min(250 * open, 2200), {
    seconds: 80,
    holdMs: 600_000,
  });
  assert.deepEqual(targets.slice(0, 3), [2, 4, 8]);
  // 16 carry only 10 % more than 8, under a quarter of the ideal doubling: back to 8.
  assert.deepEqual(governor.target, 8, `targets ${targets}`);
});

Deno.test("at the cap, half as many are kept when they carry nearly as much", () => {
  const { governor, targets } = drive((open) => Math.min(250 * open, 1000), {
    max: 8,
    start: 8,
    seconds: 30,
    holdMs: 600_000,
  });
  assert.deepEqual(targets, [8, 4]);
  assert.deepEqual(governor.target, 4);
});

Deno.test("nothing changes while the vessel has no more work than connections", () => {
  const { targets } = drive((open) => 250 * open, { seconds: 60, busy: false });
  assert.deepEqual(targets, [2]);
});

Deno.test("a try whose connections never open is given up", () => {
  const governor = new ConnectionGovernor({ max: 16, start: 2, openWaitMs: 10_000 });
  let bytes = 0;
  let now = 0;
  for (; now <= 4000; now += 500) governor.tick(now, bytes += 1000, true, 2);
  assert.deepEqual(governor.target, 4, "tries 4 after a reading at 2");
  // The vessel refuses more: only 2 stay open.
  for (; now <= 20_000; now += 500) governor.tick(now, bytes += 1000, true, 2);
  assert(governor.target === 4, "the target stays while the transport copes");
  for (; now <= 200_000; now += 500) governor.tick(now, bytes += 1000, true, 2);
  assert.deepEqual(governor.target, 4, "no further doubling while the last one never opened");
});
