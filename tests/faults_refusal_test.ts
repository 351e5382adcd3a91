/**
 * A vessel that refuses connections for a minute, end to end: the real CLI
 * (`run`) replicates to a real OpenSSH vessel through the fault-injecting
 * proxy. Apart from faults_network_test.ts because it mostly waits: the
 * test task runs it beside the other suites (tests/run_tests.ts).
 */
import assert from "node:assert/strict";
import { listFiles, runCli, waitFor } from "./cli_harness.ts";
import {
  DestinationPoller,
  faultTest,
  filesOf,
  MiB,
  noticeSkip,
  partsSent,
  report,
  sleep,
  startRig,
} from "./fault_harness.ts";

noticeSkip("faults_refusal_test.ts");

/** The vessel's Timeout in this test, in seconds. */
const TIMEOUT = 3;
/** How long the vessel refuses connections (the issue says "for a minute"). */
const DOWN_MS = 60_000;

faultTest(
  `a vessel refusing connections for ${DOWN_MS / 1000} s gets the file soon after it returns, ` +
    "never marked done meanwhile",
  async () => {
    const rig = await startRig({ chunkSize: MiB, timeout: TIMEOUT });
    try {
      const files = filesOf(1, 12 * MiB, 400);
      const [[relpath]] = files;
      await rig.writeSources(files);
      rig.proxy.throttle(4 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const daemon = rig.startDaemon();
      await waitFor(() => partsSent(daemon.log).length >= 2, 30_000, "2 parts sent");
      const beforeDown = rig.proxy.connections();
      rig.proxy.refuse(true);
      rig.proxy.throttle(undefined);
      const down = performance.now();
      let checks = 0;
      while (performance.now() - down < DOWN_MS) {
        assert.deepEqual(await listFiles(`${rig.outbox}/processed`), [], "processed/ while down");
        // A hidden temp name may stay until the vessel notices the dead session (the streamed
        // assembly then removes it); a final name must never appear while the vessel is down.
        const visible = (await listFiles(rig.destinationLocal)).filter((path) =>
          !path.slice(path.lastIndexOf("/") + 1).startsWith(".")
        );
        assert.deepEqual(visible, [], "destination while down");
        checks++;
        await sleep(500);
      }
      const status = await runCli(["status", "--config", rig.config, "--json"]);
      assert.equal(status.code, 0, status.stderr);
      const queue = JSON.parse(status.stdout).queue as { queuedFiles: number }[];
      assert.equal(queue[0].queuedFiles, 1, status.stdout);
      assert.match(status.stdout, /Cannot connect/, "status shows why the vessel waits");
      const refused = rig.proxy.connections() - beforeDown;

      rig.proxy.refuse(false);
      const back = performance.now();
      const delay = await rig.secondsToDelivery(files, daemon, poller, back);
      report(
        "refused",
        `delivered ${delay.toFixed(1)} s after the vessel returned (down ${DOWN_MS / 1000} s, ` +
          `${refused} connection attempts while down, ${checks} checks)`,
      );
      assert.ok(delay <= 35, `delivered ${delay.toFixed(1)} s after the vessel returned`);
      // Tries 0.8-1.2 s, 1.6-2.4 s, ... apart, capped at 30 s: at most 7 in 60 s, and a try
      // starts at most 2 logins (its part directory and the free space are asked together).
      // Each part of the file used to log in again once the one before failed: 35.
      assert.ok(refused <= 14, `${refused} connection attempts while down: the back-off leaks`);
      // The delivery line may reach the test's pipe after the move it precedes shows on disk.
      await daemon.waitForLog(new RegExp(`"outbox/${relpath}": delivered`), 5_000);
    } finally {
      await rig.cleanup();
    }
  },
);
