/**
 * Shore-side faults, end to end through the CLI against a real OpenSSH vessel
 * behind the fault proxy: `kill -9` of the daemon at the worst moments
 * (failpoints and progress-driven kills), SIGTERM mid-transfer, and sources
 * rewritten, appended to or deleted while they are being sent.
 *
 * Bytes are measured at the proxy (`bytes.up`, client to vessel), so "sent
 * again" counts everything on the wire, protocol included.
 */
import assert from "node:assert/strict";
import { listFiles, randomBytes, sha256, waitFor } from "./cli_harness.ts";
import {
  DestinationPoller,
  faultTest,
  MiB,
  mib,
  noticeSkip,
  partBytesSent,
  partsSent,
  report,
  type Rig,
  sleep,
  startRig,
  walk,
} from "./fault_harness.ts";
import { TEMP_PREFIX } from "../transports/transport.ts";
import { partCount, partSizeFor } from "../src/engine/source.ts";

noticeSkip("faults_crash_test.ts");

/** Protocol bytes allowed per connection (SSH handshake, SFTP requests) on top of the data. */
const PER_CONNECTION = 64 * 1024;
/** Protocol bytes allowed per byte of data (SSH packets, SFTP write headers). */
const PER_BYTE = 0.005;

/** What may be sent on top of `data` bytes over `connections` connections. */
function overhead(data: number, connections: number): number {
  return data * PER_BYTE + connections * PER_CONNECTION;
}

/**
 * Waits for a daemon killed by a failpoint or by us, checks it died of
 * SIGKILL, and waits until the proxy has closed its connections, so bytes
 * it still forwarded for the dead daemon count towards that daemon's run.
 */
async function assertKilled(rig: Rig, daemon: ReturnType<Rig["startDaemon"]>): Promise<void> {
  const status = await daemon.exited();
  assert.equal(status.signal, "SIGKILL", `exit ${status.code}; log:\n${daemon.log.slice(-3000)}`);
  await waitFor(() => rig.proxy.openConnections() === 0, 15_000, "the dead daemon's connections");
}

async function hiddenTemps(rig: Rig): Promise<string[]> {
  return (await walk(rig.destinationLocal)).filter((path) =>
    path.slice(path.lastIndexOf("/") + 1).startsWith(TEMP_PREFIX)
  );
}

for (
  const point of [
    "after-part",
    "before-assemble",
    "after-assemble",
    "before-publish",
    "after-publish",
  ]
) {
  faultTest(
    `kill -9 at failpoint ${point}: the restart delivers exactly once, sending only what was missing`,
    async () => {
      const rig = await startRig({ chunkSize: MiB });
      try {
        const size = 8 * MiB;
        // Parts spread over the vessel's connections may be smaller than ChunkSize.
        const parts = partCount(size, partSizeFor(size, MiB, rig.capabilities.parallelParts));
        const files = new Map([["crash.bin", randomBytes(size, 800)]]);
        await rig.writeSources(files);
        const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
        const first = rig.startDaemon({ CONTENTMONSTER_FAILPOINT: point });
        await assertKilled(rig, first);
        const sentFirst = rig.proxy.bytes.up;
        const connectionsFirst = rig.proxy.connections();
        const whole = [...(await rig.partsOnVessel()).values()].flat();
        const temps = await hiddenTemps(rig);
        const published = await listFiles(rig.destinationLocal);
        assert.deepEqual(
          await listFiles(`${rig.outbox}/processed`),
          [],
          "processed/ after the kill",
        );
        if (point === "after-part") {
          assert.ok(whole.length >= 1 && whole.length < parts, `${whole}`);
        }
        if (point === "before-assemble") assert.equal(whole.length, parts);
        if (point === "after-assemble" || point === "before-publish") {
          assert.equal(whole.length, parts);
          assert.equal(temps.length, 1, "the assembled temp file");
        }
        if (point === "after-publish") assert.deepEqual(published, ["crash.bin"]);
        else assert.deepEqual(published.filter((name) => !name.includes(TEMP_PREFIX)), []);

        const second = rig.startDaemon();
        await rig.waitProcessed(files, 60_000, second);
        await poller.assertClean({ publishedOnce: true });
        await rig.assertFinal(files);
        const sentSecond = rig.proxy.bytes.up - sentFirst;
        const connectionsSecond = rig.proxy.connections() - connectionsFirst;
        const again = partsSent(second.log).filter((index) => whole.includes(index));
        const resent = rig.proxy.bytes.up - size;
        report(
          `failpoint ${point}`,
          `${whole.length} parts whole at the kill; restart sent ${mib(sentSecond)} over ` +
            `${connectionsSecond} connections (${partsSent(second.log).length} parts); ` +
            `${mib(resent)} sent beyond the data in all`,
        );
        assert.deepEqual(again, [], "parts whole on the vessel were sent again");
        if (point === "after-part") {
          assert.ok(
            resent <=
              rig.capabilities.parallelParts * MiB + overhead(size, rig.proxy.connections()),
            `${mib(resent)} sent again`,
          );
        } else {
          assert.equal(partsSent(second.log).length, 0, "no part is sent after the restart");
          assert.ok(
            sentSecond <= overhead(0, connectionsSecond),
            `the restart sent ${sentSecond} bytes`,
          );
        }
      } finally {
        await rig.cleanup();
      }
    },
  );
}

faultTest(
  "kill -9 at half of a 48 MiB file: the restart sends again at most the parts in flight",
  async () => {
    const rig = await startRig({ chunkSize: MiB });
    try {
      const size = 48 * MiB;
      const files = new Map([["half.bin", randomBytes(size, 900)]]);
      await rig.writeSources(files);
      rig.proxy.throttle(24 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const first = rig.startDaemon();
      await waitFor(() => partsSent(first.log).length >= 24, 30_000, "24 parts sent");
      first.kill("SIGKILL");
      await assertKilled(rig, first);
      const whole = [...(await rig.partsOnVessel()).values()].flat();
      const sentFirst = rig.proxy.bytes.up;
      rig.proxy.throttle(undefined);

      const second = rig.startDaemon();
      await rig.waitProcessed(files, 60_000, second);
      await poller.assertClean();
      await rig.assertFinal(files);
      const sentSecond = rig.proxy.bytes.up - sentFirst;
      const missing = (size / MiB - whole.length) * MiB;
      const resent = rig.proxy.bytes.up - size;
      report(
        "kill -9 at half",
        `${whole.length} of 48 parts whole at the kill; first run sent ${mib(sentFirst)}, ` +
          `the restart ${mib(sentSecond)} for ${mib(missing)} of missing parts; ` +
          `${mib(resent)} sent beyond the data in all (in flight at most ` +
          `${rig.capabilities.parallelParts} parts = ${mib(rig.capabilities.parallelParts * MiB)})`,
      );
      const again = partsSent(second.log).filter((index) => whole.includes(index));
      assert.deepEqual(again, [], "parts whole on the vessel were sent again");
      assert.ok(
        resent <= rig.capabilities.parallelParts * MiB + overhead(size, rig.proxy.connections()),
        `${mib(resent)} sent beyond the data`,
      );
    } finally {
      await rig.cleanup();
    }
  },
);

faultTest(
  "kill -9 each time a part arrives, until done: each file delivered once, each kill costs " +
    "at most the parts in flight",
  async () => {
    const rig = await startRig({ chunkSize: MiB });
    try {
      const files = new Map([
        ["loop/a.bin", randomBytes(6 * MiB, 1000)],
        ["loop/b.bin", randomBytes(6 * MiB + 12345, 1001)],
      ]);
      const size = [...files.values()].reduce((sum, data) => sum + data.byteLength, 0);
      await rig.writeSources(files);
      rig.proxy.throttle(8 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      // Both files are sent at once (parallelDeliveries 4), each with its parts in flight.
      const inFlight = rig.capabilities.parallelParts *
        Math.min(files.size, rig.capabilities.parallelDeliveries);
      const costs: number[] = [];
      let kills = 0;
      const deadline = Date.now() + 90_000;
      for (let done = false; !done;) {
        const bytesBefore = rig.proxy.bytes.up;
        const connectionsBefore = rig.proxy.connections();
        const daemon = rig.startDaemon();
        for (;;) {
          assert.ok(Date.now() < deadline, `not done after ${kills} kills:\n${daemon.log}`);
          if (partsSent(daemon.log).length > 0) break;
          if (await rig.processed(files)) {
            done = true;
            break;
          }
          await sleep(10);
        }
        if (done) break;
        daemon.kill("SIGKILL");
        await assertKilled(rig, daemon);
        kills++;
        // Sent during this run but not in a part it logged as whole: lost to the kill
        // (an upper bound: a part may have become whole just before the kill, unlogged).
        const cost = rig.proxy.bytes.up - bytesBefore - partBytesSent(daemon.log);
        costs.push(cost);
        const connections = rig.proxy.connections() - connectionsBefore;
        assert.ok(
          cost <= inFlight * MiB + overhead(0, connections),
          `kill ${kills} lost ${mib(cost)} over ${connections} connections`,
        );
      }
      await poller.assertClean({ publishedOnce: true });
      await rig.assertFinal(files);
      const resent = rig.proxy.bytes.up - size;
      report(
        "kill -9 loop",
        `${kills} kills; bytes lost per kill (sent but not logged whole; ${inFlight} parts ` +
          `may be in flight): ` +
          `${costs.map((cost) => (cost / MiB).toFixed(2)).join(", ")} MiB; ` +
          `${mib(resent)} sent beyond ${mib(size)} of data in all`,
      );
      assert.ok(kills >= 5, `only ${kills} kills`);
    } finally {
      await rig.cleanup();
    }
  },
);

faultTest(
  "SIGTERM during a throttled transfer exits within 5 s; the restart finishes it",
  async () => {
    const rig = await startRig({ chunkSize: MiB });
    try {
      const files = new Map([["term.bin", randomBytes(16 * MiB, 1100)]]);
      await rig.writeSources(files);
      rig.proxy.throttle(2 * MiB);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, files);
      const first = rig.startDaemon();
      await waitFor(() => partsSent(first.log).length >= 2, 30_000, "2 parts sent");
      const signalled = performance.now();
      first.kill("SIGTERM");
      const status = await first.exited();
      const took = (performance.now() - signalled) / 1000;
      assert.equal(status.code, 0, first.log.slice(-3000));
      // The vessel's assembly command removes its hidden temp file once its connection is
      // gone, a moment after the daemon has exited; nothing ever shows under the final name.
      assert.ok(
        (await listFiles(rig.destinationLocal)).every((name) => name.startsWith(TEMP_PREFIX)),
      );
      await waitFor(
        async () => (await listFiles(rig.destinationLocal)).length === 0,
        5_000,
        "the vessel's temp file removed",
      );
      rig.proxy.throttle(undefined);

      const second = rig.startDaemon();
      await rig.waitProcessed(files, 60_000, second);
      await poller.assertClean();
      await rig.assertFinal(files);
      report("SIGTERM", `exited ${took.toFixed(2)} s after SIGTERM with status 0`);
      assert.ok(took < 5, `stopping took ${took.toFixed(2)} s`);
    } finally {
      await rig.cleanup();
    }
  },
);

for (const change of ["rewritten", "appended to"] as const) {
  faultTest(
    `a source ${change} during its transfer ends new on the vessel and never shows a mix`,
    async () => {
      const rig = await startRig({ chunkSize: MiB });
      try {
        const oldData = randomBytes(8 * MiB, 1200);
        const extra = randomBytes(MiB + 999, 1201);
        const newData = change === "rewritten"
          ? randomBytes(8 * MiB + 1000, 1202)
          : new Uint8Array([...oldData, ...extra]);
        await rig.writeSources(new Map([["changing.bin", oldData]]));
        rig.proxy.throttle(4 * MiB);
        const poller = new DestinationPoller(
          rig.destinationLocal,
          new Map([["changing.bin", [sha256(oldData), sha256(newData)]]]),
        );
        const daemon = rig.startDaemon();
        await waitFor(() => partsSent(daemon.log).length >= 3, 30_000, "3 parts sent");
        const source = `${rig.outbox}/changing.bin`;
        if (change === "rewritten") await Deno.writeFile(source, newData);
        else await Deno.writeFile(source, extra, { append: true });
        await sleep(500);
        rig.proxy.throttle(undefined);
        const files = new Map([["changing.bin", newData]]);
        await rig.waitProcessed(files, 60_000, daemon);
        await poller.assertClean({ publishedOnce: false });
        await rig.assertFinal(files);
        report(
          `source ${change}`,
          `${partsSent(daemon.log).length} parts sent for ${Math.ceil(newData.length / MiB)}; ` +
            `${mib(rig.proxy.bytes.up)} sent`,
        );
      } finally {
        await rig.cleanup();
      }
    },
  );
}

faultTest(
  "a source deleted during its transfer is not published and its parts leave the TempDir",
  async () => {
    const rig = await startRig({ chunkSize: MiB });
    try {
      await rig.writeSources(new Map([["doomed.bin", randomBytes(12 * MiB, 1300)]]));
      rig.proxy.throttle(4 * MiB);
      const after = new Map([["after.txt", new TextEncoder().encode("still working")]]);
      const poller = DestinationPoller.forFiles(rig.destinationLocal, after);
      const daemon = rig.startDaemon();
      await waitFor(() => partsSent(daemon.log).length >= 3, 30_000, "3 parts sent");
      await Deno.remove(`${rig.outbox}/doomed.bin`);
      await daemon.waitForLog(/vanished before delivery; dropped/, 30_000);
      rig.proxy.throttle(undefined);
      assert.deepEqual(await walk(rig.tempDirLocal), [], "parts left in the TempDir");
      await rig.writeSources(after);
      await rig.waitProcessed(after, 30_000, daemon);
      await poller.assertClean();
      await rig.assertFinal(after);
      report("source deleted", `dropped after ${partsSent(daemon.log).length - 1} parts`);
    } finally {
      await rig.cleanup();
    }
  },
);
