/**
 * Unstable links, end to end: the real CLI (`run`) replicates to a real
 * OpenSSH vessel through the fault-injecting proxy, which cuts, stalls or
 * refuses the connections (the vessel down for a minute is
 * faults_refusal_test.ts). Every scenario ends with the vessel holding every
 * file byte-identical, the sources in processed/, no temp leftovers, and the
 * poller never having seen wrong content under a final name.
 */
import assert from "node:assert/strict";
import { waitFor } from "./cli_harness.ts";
import type { CutMode } from "./fault_proxy.ts";
import {
  DestinationPoller,
  faultTest,
  filesOf,
  MiB,
  mib,
  noticeSkip,
  partsSent,
  report,
  startRig,
} from "./fault_harness.ts";

noticeSkip("faults_network_test.ts");

/** The vessel's Timeout in these tests, in seconds. */
const TIMEOUT = 3;

for (const mode of ["rst", "fin"] as const satisfies readonly CutMode[]) {
  faultTest(
    `connections cut (${mode}) every 1-4 MiB: 50 MiB arrive whole, sending at most twice the data`,
    async () => {
      const rig = await startRig({ chunkSize: MiB, timeout: TIMEOUT });
      try {
        const files = filesOf(5, 10 * MiB, mode === "rst" ? 100 : 200);
        const data = 50 * MiB;
        await rig.writeSources(files);
        rig.proxy.cutAfter({ minBytes: MiB, maxBytes: 4 * MiB, mode });
        const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
        const started = performance.now();
        const daemon = rig.startDaemon();
        await rig.waitProcessed(files, 120_000, daemon);
        const took = (performance.now() - started) / 1000;
        await poller.assertClean();
        await rig.assertFinal(files);
        const sent = rig.proxy.bytes.up;
        report(
          `cuts (${mode})`,
          `${mib(sent)} sent for ${mib(data)} of data (${(sent / data).toFixed(2)}x), ` +
            `${rig.proxy.connections()} connections, ${took.toFixed(1)} s, seed ${rig.proxy.seed}`,
        );
        assert.ok(rig.proxy.connections() > 5, "the proxy cut hardly anything");
        assert.ok(sent <= 2 * data, `${mib(sent)} sent for ${mib(data)} of data`);
      } finally {
        await rig.cleanup();
      }
    },
  );
}

faultTest(
  "a stalled link is dropped within three Timeouts and the file finishes on a new connection",
  async () => {
    // A fixed count: a connection opened because the link has room would pass for a reconnect.
    const rig = await startRig({ chunkSize: MiB, timeout: TIMEOUT, connections: 2 });
    try {
      const files = filesOf(1, 24 * MiB, 300);
      await rig.writeSources(files);
      rig.proxy.throttle(6 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const daemon = rig.startDaemon();
      // Both logged in: a login under way when the stall comes fails at the login's own
      // deadline, and the pool waits for it before it opens another.
      await waitFor(
        () => partsSent(daemon.log).length >= 3 && loginsOf(daemon.log) >= 2,
        30_000,
        "3 parts sent over 2 connections",
      );
      const before = rig.proxy.connections();
      const partsBefore = partsSent(daemon.log).length;
      rig.proxy.stall();
      const stalled = performance.now();
      await waitFor(
        () => rig.proxy.connections() > before,
        6 * TIMEOUT * 1000,
        "a new connection after the stall",
      );
      const detected = (performance.now() - stalled) / 1000;
      // Stalling holds new connections too: let the link carry data again.
      rig.proxy.resume();
      rig.proxy.throttle(undefined);
      await rig.waitProcessed(files, 60_000, daemon);
      await poller.assertClean();
      await rig.assertFinal(files);
      report(
        "stall",
        `new connection ${detected.toFixed(2)} s after the stall (Timeout ${TIMEOUT} s); ` +
          `${partsBefore} parts were whole before it; ${mib(rig.proxy.bytes.up)} sent for ` +
          `${mib(24 * MiB)}`,
      );
      assert.ok(
        detected <= 3 * TIMEOUT,
        `the stall took ${detected.toFixed(2)} s to detect (Timeout ${TIMEOUT} s)`,
      );
      assert.match(daemon.log, /no SFTP reply|Keepalive|timed out|timeout/i);
      assert.ok(partsSent(daemon.log).length < 24 + 8, "most parts were sent only once");
    } finally {
      await rig.cleanup();
    }
  },
);

/** How many logins the daemon's log tells of. */
function loginsOf(log: string): number {
  return log.match(/ connected to /g)?.length ?? 0;
}
