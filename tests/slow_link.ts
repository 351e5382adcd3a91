/**
 * A slow link that is alive (issue 8, item 0): the fault proxy throttled and
 * delayed, one file smaller than ChunkSize. Such a link was taken for dead
 * twice over: ssh2's own keepalive, whose ping's reply waits behind the
 * megabytes of writes queued before it; and a connection judged by its
 * SFTP replies alone, when one write's reply takes longer than `Timeout` to
 * come back (a share of the link too small for one 255 KiB request).
 */
import assert from "node:assert/strict";
import { randomBytes } from "./cli_harness.ts";
import { DestinationPoller, faultTest, MiB, mib, report, startRig } from "./fault_harness.ts";

/** One slow link and what goes over it. */
export interface SlowLink {
  /** Bytes of the one file sent. */
  readonly size: number;
  /** The vessel's `Timeout`, in seconds. */
  readonly timeout: number;
  /** The link's rate, in bytes per second. */
  readonly bytesPerSecond: number;
  /** Delay each way, in milliseconds. */
  readonly latencyMs: number;
  readonly sshClient: "openssh" | "builtin";
  /** The vessel's `Connections`; default auto. */
  readonly connections?: number;
}

/** Registers the scenario: the file arrives, and no connection is taken for dead. */
export function slowLinkTest(link: SlowLink): void {
  const { size, timeout, bytesPerSecond, latencyMs, sshClient, connections } = link;
  const rate = `${Math.round(bytesPerSecond / 1024)} KiB/s`;
  const roundTrip = `${(latencyMs * 2 / 1000).toFixed(1).replace(/\.0$/, "")} s`;
  faultTest(
    `${sshClient} carrier: a link throttled to ${rate} with ${roundTrip} round trips delivers ` +
      `${mib(size)} with Timeout ${timeout}` +
      (connections ? ` over ${connections} connection(s)` : "") + " (slow is not dead)",
    async () => {
      // A ChunkSize above the size: the file's parts are as small as spreading makes them.
      const rig = await startRig({ chunkSize: 10 * MiB, timeout, sshClient, connections });
      try {
        const files = new Map([["slow/file.bin", randomBytes(size, 500)]]);
        await rig.writeSources(files);
        rig.proxy.throttle(bytesPerSecond);
        rig.proxy.latency(latencyMs);
        const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
        const started = performance.now();
        const daemon = rig.startDaemon();
        // The link alone needs size / rate; a resend from byte 0 would not fit.
        const linkSeconds = size / bytesPerSecond;
        await rig.waitProcessed(files, (linkSeconds * 2 + 30) * 1000, daemon);
        const took = (performance.now() - started) / 1000;
        await poller.assertClean();
        await rig.assertFinal(files);
        report(
          "slow link",
          `${sshClient}: ${mib(size)} delivered in ${took.toFixed(1)} s over ${rate} with ` +
            `${roundTrip} round trips (Timeout ${timeout}), ${mib(rig.proxy.bytes.up)} sent, ` +
            `${rig.proxy.connections()} connection(s)`,
        );
        assert.doesNotMatch(daemon.log, /Keepalive timeout|no SFTP reply|no reply or progress/);
        assert.doesNotMatch(daemon.log, /retrying in/, "no connection was taken for dead");
      } finally {
        await rig.cleanup();
      }
    },
  );
}
