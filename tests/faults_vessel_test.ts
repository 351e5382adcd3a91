/**
 * Vessel-side faults, end to end through the CLI against a real OpenSSH
 * vessel behind the fault proxy: a reboot that wipes the TempDir mid-file,
 * and a disk that is full (before the upload, and filling up during it).
 */
import assert from "node:assert/strict";
import { listFiles, randomBytes, runCli, waitFor } from "./cli_harness.ts";
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

noticeSkip("faults_vessel_test.ts");

/**
 * Removes `dir` and all in it, as a reboot empties a tmpfs: again if the
 * vessel created a file in it meanwhile (the removal then fails with
 * "Directory not empty"; CI lost that race once).
 */
async function wipe(dir: string): Promise<void> {
  for (let tries = 1;; tries++) {
    try {
      return await Deno.remove(dir, { recursive: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      if (tries >= 20) throw error;
      await sleep(10);
    }
  }
}

faultTest(
  "a TempDir wiped mid-file (vessel reboot): the file is sent again and arrives whole",
  async () => {
    // Two connections: 16 parts of ChunkSize, at most 4 in flight when the wipe comes.
    const rig = await startRig({ chunkSize: MiB, connections: 2 });
    try {
      const files = new Map([["wiped.bin", randomBytes(16 * MiB, 500)]]);
      await rig.writeSources(files);
      rig.proxy.throttle(4 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const daemon = rig.startDaemon();
      await waitFor(() => partsSent(daemon.log).length >= 5, 30_000, "5 parts sent");
      const lost = [...(await rig.partsOnVessel()).values()].flat().length;
      await wipe(rig.tempDirLocal);
      const sentAtWipe = partsSent(daemon.log).length;
      await sleep(1000); // parts in flight now fail on the vessel
      rig.proxy.throttle(undefined);
      await rig.waitProcessed(files, 60_000, daemon);
      await poller.assertClean();
      await rig.assertFinal(files);
      const sent = partsSent(daemon.log).length;
      report(
        "TempDir wiped",
        `${lost} whole parts wiped (${sentAtWipe} logged sent); ${sent} parts sent for 16; ` +
          `${mib(rig.proxy.bytes.up)} sent for ${mib(16 * MiB)}`,
      );
      assert.ok(sent > 16, "nothing was sent again after the wipe");
      assert.ok(sent <= 16 + sentAtWipe + 4, `${sent} parts sent for a 16-part file`);
    } finally {
      await rig.cleanup();
    }
  },
);

/** Fills the file system of `path`'s directory until it has no space left. */
async function fillUp(path: string): Promise<number> {
  using file = await Deno.open(path, { write: true, create: true, append: true });
  const block = new Uint8Array(64 * 1024).fill(0x55);
  let written = 0;
  try {
    for (;;) written += await file.write(block);
  } catch {
    // ENOSPC: full.
  }
  return written;
}

async function statusJson(config: string): Promise<string> {
  const status = await runCli(["status", "--config", config, "--json"]);
  assert.equal(status.code, 0, status.stderr);
  return status.stdout;
}

faultTest(
  "a vessel without space for a file: a clear no-space error, nothing under the final name, " +
    "delivered once space is freed",
  async () => {
    const rig = await startRig({ chunkSize: MiB, tmpfs: 16 * MiB });
    try {
      const files = new Map([["big.bin", randomBytes(5 * MiB, 600)]]);
      await rig.writeSources(files);
      const filler = `${rig.tmpfsLocal}/filler`;
      await Deno.writeFile(filler, new Uint8Array(10 * MiB));
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const daemon = rig.startDaemon();
      await daemon.waitForLog(/no space|not enough space/i, 20_000);
      await sleep(2000); // a retry or two while still full
      const status = await statusJson(rig.config);
      assert.match(status, /space/i, status);
      assert.deepEqual(await listFiles(rig.destinationLocal), [], "files on the full vessel");
      assert.deepEqual(await listFiles(`${rig.outbox}/processed`), []);
      const error = daemon.log.split("\n").find((line) => /space/i.test(line)) ?? "";

      await Deno.remove(filler);
      const freed = performance.now();
      const delay = await rig.secondsToDelivery(files, daemon, poller, freed);
      report(
        "disk full",
        `delivered ${delay.toFixed(1)} s after space was freed; error: ${error.slice(25, 200)}`,
      );
      assert.ok(delay <= 35, `delivered ${delay.toFixed(1)} s after space was freed`);
    } finally {
      await rig.cleanup();
    }
  },
);

faultTest(
  "a vessel disk that fills up during the upload: no-space error, no partial file, " +
    "delivered once space is freed",
  async () => {
    const rig = await startRig({ chunkSize: MiB, tmpfs: 16 * MiB });
    try {
      const files = new Map([["growing.bin", randomBytes(5 * MiB, 700)]]);
      await rig.writeSources(files);
      rig.proxy.throttle(2 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const daemon = rig.startDaemon();
      await waitFor(() => partsSent(daemon.log).length >= 1, 30_000, "a part sent");
      const filler = `${rig.tmpfsLocal}/filler`;
      const filled = await fillUp(filler);
      rig.proxy.throttle(undefined);
      await daemon.waitForLog(/no space|not enough space/i, 20_000);
      const status = await statusJson(rig.config);
      assert.match(status, /space/i, status);
      assert.deepEqual(await listFiles(rig.destinationLocal), [], "files on the full vessel");
      const error = daemon.log.split("\n").find((line) => /space/i.test(line)) ?? "";

      await Deno.remove(filler);
      const freed = performance.now();
      const delay = await rig.secondsToDelivery(files, daemon, poller, freed);
      report(
        "disk filled during upload",
        `filler took ${mib(filled)}; delivered ${delay.toFixed(1)} s after space was freed; ` +
          `error: ${error.slice(25, 220)}`,
      );
      assert.ok(delay <= 35, `delivered ${delay.toFixed(1)} s after space was freed`);
    } finally {
      await rig.cleanup();
    }
  },
);
