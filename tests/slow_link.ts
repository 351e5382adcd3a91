/**
 * A slow link that is alive (issue 8, item 0): the builtin carrier through
 * the fault proxy throttled to 128 KiB/s with 1 s round trips, one file
 * smaller than ChunkSize. ssh2's own keepalive took such a link for dead: its ping's reply
 * waits behind the megabytes of writes queued before it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "./cli_harness.ts";
import { DestinationPoller, faultTest, MiB, mib, report, startRig } from "./fault_harness.ts";

/** Registers the scenario for a file of `size` bytes and the vessel's `Timeout`. */
export function slowLinkTest(size: number, timeout: number): void {
  faultTest(
    `builtin carrier: a link throttled to 128 KiB/s with 1 s round trips delivers ` +
      `${mib(size)} with Timeout ${timeout} (slow is not dead)`,
    async () => {
      // A ChunkSize above the size: the file's parts are as small as spreading makes them.
      const rig = await startRig({ chunkSize: 10 * MiB, timeout, sshClient: "builtin" });
      try {
        const files = new Map([["slow/file.bin", randomBytes(size, 500)]]);
        await rig.writeSources(files);
        rig.proxy.throttle(128 * 1024);
        rig.proxy.latency(500); // each way: a round trip of 1 s
        const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
        const started = performance.now();
        const daemon = rig.startDaemon();
        // The link alone needs size / 128 KiB/s; a resend from byte 0 would not fit.
        const linkSeconds = size / (128 * 1024);
        await rig.waitProcessed(files, (linkSeconds * 2 + 30) * 1000, daemon);
        const took = (performance.now() - started) / 1000;
        await poller.assertClean();
        await rig.assertFinal(files);
        report(
          "slow link",
          `${mib(size)} delivered in ${took.toFixed(1)} s over 128 KiB/s with 1 s round ` +
            `trips (Timeout ${timeout}), ${mib(rig.proxy.bytes.up)} sent, ` +
            `${rig.proxy.connections()} connection(s)`,
        );
        assert.doesNotMatch(daemon.log, /Keepalive timeout|no SFTP reply/);
        assert.doesNotMatch(daemon.log, /retrying in/, "no connection was taken for dead");
      } finally {
        await rig.cleanup();
      }
    },
  );
}
