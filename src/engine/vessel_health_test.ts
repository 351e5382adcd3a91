import assert from "node:assert/strict";
import type { VesselHealthRecord } from "../store/store.ts";
import { VesselHealth } from "./vessel_health.ts";

function tracked(): { health: VesselHealth; changes: [VesselHealthRecord, VesselHealthRecord][] } {
  const changes: [VesselHealthRecord, VesselHealthRecord][] = [];
  const health = new VesselHealth("v", (before, after) => changes.push([before, after]), {
    now: 0,
  });
  return { health, changes };
}

Deno.test("VesselHealth: idle, connected on the first part, backing off, connected again", () => {
  const { health, changes } = tracked();
  assert.equal(health.state, "idle");
  health.sent(1000, 1_000);
  health.sent(1000, 1_500);
  assert.equal(changes.length, 1, "more parts while connected change nothing");
  assert.deepEqual([changes[0][0].state, changes[0][1].state], ["idle", "connected"]);

  health.failed("connection refused", 5_000, false, 2_000);
  health.failed("connection refused", 9_000, false, 6_000);
  const failing = health.snapshot(6_000);
  assert.equal(failing.state, "backing-off");
  assert.equal(failing.since, 2_000, "a longer back-off keeps the start of the failure");
  assert.equal(failing.failingSince, 2_000);
  assert.equal(failing.backoffUntil, 9_000);
  assert.equal(failing.lastError, "connection refused");
  assert.equal(failing.bytesPerSecond, 400, "2000 bytes in the 5 s since the first part");

  health.delivered(12_000);
  const back = health.snapshot(12_000);
  assert.deepEqual(
    [back.state, back.since, back.lastError, back.failingSince, back.backoffUntil],
    ["connected", 12_000, null, null, null],
  );
  assert.equal(back.lastSuccessAt, 12_000);
  assert.equal(changes.at(-1)![0].failingSince, 2_000, "the change tells how long it failed");

  health.quiet(20_000);
  assert.equal(health.state, "idle");
  assert.equal(health.snapshot(70_000).bytesPerSecond, 0, "a minute later the bytes are gone");
});

Deno.test("VesselHealth keeps the last success an earlier run recorded", () => {
  const health = new VesselHealth("v", () => {}, { now: 5_000, lastSuccessAt: 1_000 });
  assert.equal(health.snapshot(6_000).lastSuccessAt, 1_000);
  assert.equal(health.state, "idle");
});

Deno.test("VesselHealth: a failure only the operator can fix is failing, not backing off", () => {
  const { health } = tracked();
  health.failed("host key changed", 600_000, true, 1_000);
  assert.equal(health.state, "failing");
  health.quiet(5_000);
  assert.equal(health.state, "failing", "quiet never hides a failure");
});
