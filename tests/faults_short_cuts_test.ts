/**
 * A link cut more often than a part's size (issue 8, item 0): each try
 * carries on from what the vessel kept of the last, so the file arrives.
 * Most of the time is the vessel's back-off between tries, so this suite
 * runs beside the others (tests/run_tests.ts).
 */
import assert from "node:assert/strict";
import {
  DestinationPoller,
  faultTest,
  filesOf,
  MiB,
  mib,
  noticeSkip,
  report,
  startRig,
} from "./fault_harness.ts";

noticeSkip("faults_short_cuts_test.ts");

faultTest(
  "connections cut every 250-400 KiB: 1 MiB parts still arrive, each try carrying on from the last",
  async () => {
    // One connection: 2 parts of 1 MiB, each longer than what one connection carries.
    const rig = await startRig({ chunkSize: MiB, timeout: 3, connections: 1 });
    try {
      const files = filesOf(1, 2 * MiB, 400);
      await rig.writeSources(files);
      rig.proxy.cutAfter({ minBytes: 250 * 1024, maxBytes: 400 * 1024, mode: "rst" });
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const started = performance.now();
      const daemon = rig.startDaemon();
      const took = await rig.secondsToDelivery(files, daemon, poller, started, 90_000);
      report(
        "short cuts",
        `${mib(rig.proxy.bytes.up)} sent for ${mib(2 * MiB)} over ` +
          `${rig.proxy.connections()} connections in ${took.toFixed(1)} s, seed ${rig.proxy.seed}`,
      );
      assert.match(daemon.log, /resuming .* at byte/);
      assert.ok(rig.proxy.bytes.up < 4 * MiB, `${mib(rig.proxy.bytes.up)} sent for 2 MiB`);
    } finally {
      await rig.cleanup();
    }
  },
);
