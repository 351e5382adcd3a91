/**
 * Unstable links, end to end: the real CLI (`run`) replicates to a real
 * OpenSSH vessel through the fault-injecting proxy, which cuts, stalls or
 * refuses the connections. Every scenario ends with the vessel holding every
 * file byte-identical, the sources in processed/, no temp leftovers, and the
 * poller never having seen wrong content under a final name.
 */
import assert from "node:assert/strict";
import { listFiles, randomBytes, runCli, waitFor } from "./cli_harness.ts";
import type { CutMode } from "./fault_proxy.ts";
import {
  DestinationPoller,
  faultTest,
  MiB,
  mib,
  noticeSkip,
  partsSent,
  report,
  sleep,
  startRig,
} from "./fault_harness.ts";

noticeSkip("faults_network_test.ts");

/** The vessel's Timeout in these tests, in seconds. */
const TIMEOUT = 3;
/** How long the vessel refuses connections (the issue says "for a minute"). */
const DOWN_MS = 60_000;

function filesOf(count: number, size: number, seed: number): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    files.set(`batch/file-${i}.bin`, randomBytes(size, seed + i));
  }
  return files;
}

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
      await waitFor(() => partsSent(daemon.log).length >= 3, 30_000, "3 parts sent");
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
      await rig.waitProcessed(files, 60_000, daemon);
      const delay = (performance.now() - back) / 1000;
      await poller.assertClean();
      await rig.assertFinal(files);
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
      assert.match(daemon.log, new RegExp(`"outbox/${relpath}": delivered`));
    } finally {
      await rig.cleanup();
    }
  },
);
