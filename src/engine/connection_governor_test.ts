import assert from "node:assert/strict";
import { ConnectionGovernor, type GovernorOptions } from "./connection_governor.ts";

/**
 * Drives a governor against a model link for `seconds`: `rate(open)` bytes
 * per ms flow while busy, and connections asked for open `openDelayMs`
 * later. Returns the targets it chose, in order, without repeats.
 */
function drive(
  rate: (open: number, msSinceOpened: number) => number,
  options: Partial<GovernorOptions> & {
    seconds: number;
    openDelayMs?: number;
    busy?: boolean;
    roundTripMs?: number;
  },
): { governor: ConnectionGovernor; targets: number[] } {
  const governor = new ConnectionGovernor({ max: 16, start: 2, ...options });
  const targets = [governor.target];
  let open = 0;
  let bytes = 0;
  let targetSince = 0;
  let openedAt = 0;
  for (let now = 0; now <= options.seconds * 1000; now += 500) {
    if (now - targetSince >= (options.openDelayMs ?? 1000) && open !== governor.target) {
      if (governor.target > open) openedAt = now;
      open = governor.target;
    }
    const target = governor.tick(now, bytes, options.busy ?? true, open, options.roundTripMs);
    if (target !== targets.at(-1)) {
      targets.push(target);
      targetSince = now;
      if (target < open) open = target; // fewer take effect at once
    }
    bytes += rate(open, now - openedAt) * 500;
  }
  return { governor, targets };
}

Deno.test("connections grow while each step raises the rate, up to the cap", () => {
  // A lossy link: every stream carries the same, whatever the count.
  const { governor, targets } = drive((open) => 250 * open, { seconds: 60 });
  // A doubling that paid in full is followed by a quadrupling.
  assert.deepEqual(targets.slice(0, 3), [2, 4, 16]);
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
    holdMs: 20_000,
  });
  // 16 carry more than 4, but 8 carry nearly as much as 16: 8 are kept; after each hold
  // 16 are tried again, and do not pay.
  assert.deepEqual(targets.slice(0, 6), [2, 4, 16, 8, 16, 8]);
  assert.ok(governor.target === 8 || governor.target === 16, `targets ${targets}`);
});

Deno.test("a quadrupling that overshoots falls back to the doubling in between", () => {
  // 2 Mbit/s per stream on a 12 Mbit/s link: 6 streams fill it.
  const { targets } = drive((open) => Math.min(250 * open, 1500), {
    seconds: 40,
    holdMs: 600_000,
  });
  // 16 carry 1.5x of 4 where 4x was ideal: 8 are tried, carry as much, and stay.
  assert.deepEqual(targets, [2, 4, 16, 8]);
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

Deno.test("the burst of new streams in slow start is not taken for the link's rate", () => {
  // A lossy link where the first streams carry three times as much until their first losses.
  const { targets } = drive(
    (open, since) => (since < 500 && open <= 2 ? 750 : 250) * open,
    { seconds: 30, holdMs: 600_000 },
  );
  assert.deepEqual(targets.slice(0, 3), [2, 4, 16]);
});

Deno.test("a long round trip starts with more connections", () => {
  const long = drive(() => 100_000, { seconds: 1, roundTripMs: 600 });
  assert.deepEqual(long.targets, [2, 16]);
  const lossy = drive(() => 100_000, { seconds: 1, roundTripMs: 60 });
  assert.deepEqual(lossy.targets, [2, 6]);
  const local = drive(() => 100_000, { seconds: 1, roundTripMs: 0.2 });
  assert.deepEqual(local.targets, [2]);
});

Deno.test("streams that fill a clean link are not joined by more", () => {
  // 100 Mbit/s, 40 ms: 4 streams carry 11.6 MiB/s, about 120 KiB in flight each.
  const full = drive((open) => Math.min(3000 * open, 12_200), {
    seconds: 30,
    roundTripMs: 40,
    holdMs: 600_000,
  });
  assert.deepEqual(full.targets, [2, 4]);
  // The same round trip with 1 % loss: about 17 KiB in flight per stream, and more pay.
  const lossy = drive((open) => 290 * open, { seconds: 30, roundTripMs: 40 });
  assert.deepEqual(lossy.targets.slice(0, 4), [2, 4, 8, 16]);
  // A long clean link: each stream is held by its 2 MiB SSH window, and more pay.
  const windowed = drive((open) => 20_000 * open, { seconds: 30, roundTripMs: 100 });
  assert.deepEqual(windowed.targets.slice(0, 3), [2, 10, 16]);
});

Deno.test("on a LAN no more connections than the shore's cores are tried", () => {
  // Loopback, CPU-bound: every count carries the same.
  const lan = { start: 4, seconds: 30, roundTripMs: 0.2, holdMs: 600_000 };
  assert.deepEqual(drive(() => 150_000, { ...lan, cores: 2 }).targets, [4, 2, 1]);
  // The first reply that shows a LAN sets the start there, before any reading: 4 connections
  // carried 87 MiB/s for it on loopback, 2 then carried 133-150.
  const governor = new ConnectionGovernor({ max: 16, start: 4, cores: 2 });
  assert.equal(governor.tick(0, 0, false, 0), 4, "the round trip is not known yet");
  assert.equal(governor.tick(100, 0, false, 1, 0.3), 2);
  assert.deepEqual(drive(() => 150_000, { ...lan, cores: 8 }).targets, [4, 8, 4]);
  assert.deepEqual(drive(() => 150_000, lan).targets, [4, 8, 4]);
  // Loopback on 2 busy cores: the quickest SFTP reply took 1.1-2.0 ms (three processes each
  // way wait for a core), and 8, then 16 connections were tried (1 GiB: 14.9 s against 11.1 s).
  const busy = { ...lan, roundTripMs: 2, cores: 2 };
  assert.deepEqual(drive(() => 150_000, busy).targets, [4, 2, 1]);
  // A long link is not a LAN: the cores do not bound it.
  const lossy = drive((open) => 290 * open, { start: 4, seconds: 30, roundTripMs: 60, cores: 2 });
  assert.deepEqual(lossy.targets.slice(0, 3), [4, 6, 12]);
});

Deno.test("a start taken from a slow login is set again by a much shorter round trip", () => {
  const governor = new ConnectionGovernor({ max: 16, start: 4 });
  // A login that took 2 s to authenticate, on a LAN with a slow CPU: 250 ms estimated.
  assert.equal(governor.tick(0, 0, false, 0, 250), 16);
  assert.equal(governor.tick(250, 0, false, 1, 400), 16, "a longer figure changes nothing");
  assert.equal(governor.tick(500, 0, false, 1, 0.3), 4, "the first SFTP reply: a LAN");
  // A real long link: the replies confirm the estimate, within a factor of two.
  const long = new ConnectionGovernor({ max: 16, start: 4 });
  long.tick(0, 0, false, 0, 690);
  assert.equal(long.tick(250, 0, false, 1, 600), 16);
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
