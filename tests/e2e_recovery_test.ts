/**
 * Crashes, stops and changing sources, end to end through the CLI on local
 * vessels whose uploads are slowed with BandwidthLimit so the test can act
 * in the middle of a file.
 */
import assert from "node:assert/strict";
import {
  CliProcess,
  fileSha256,
  listFiles,
  randomBytes,
  sha256,
  waitFor,
  Workspace,
} from "./cli_harness.ts";

const CHUNK = 256 * 1024;
const PARTS = 32;
const DEBUG = { CONTENTMONSTER_LOG: "debug" };

async function slowShore(bytesPerSecond: number): Promise<{ ws: Workspace; config: string }> {
  const ws = await Workspace.create();
  await ws.mkdir("outbox", "vessel-a", "vessel-b");
  const config = await ws.config(`[MONSTER]
ChunkSize = ${CHUNK}
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = /srv/inbox

[Vessel a]
Transport = local
Root = vessel-a
BandwidthLimit = ${bytesPerSecond}

[Vessel b]
Transport = local
Root = vessel-b
BandwidthLimit = ${bytesPerSecond}
`);
  return { ws, config };
}

/** The part indices the log says were sent to `vessel`. */
function partsSent(log: string, vessel: string): number[] {
  const pattern = new RegExp(`vessel "${vessel}": [^\\n]*: part (\\d+) sent`, "g");
  return [...log.matchAll(pattern)].map((match) => Number(match[1]));
}

Deno.test("kill -9 in the middle of a file: the restart sends only the parts not yet whole", async () => {
  const { ws, config } = await slowShore(4 * 1024 * 1024);
  const data = randomBytes(CHUNK * PARTS, 11);
  await ws.write("outbox/big.bin", data);
  const first = new CliProcess(["run", "--config", config], DEBUG);
  let second: CliProcess | undefined;
  try {
    await waitFor(() => partsSent(first.log, "a").length >= 8, 20_000, "8 parts on vessel a");
    first.kill("SIGKILL");
    await first.exited();
    const before = { a: partsSent(first.log, "a"), b: partsSent(first.log, "b") };
    assert.ok(before.a.length < PARTS, "the kill came too late to test anything");

    second = new CliProcess(["run", "--config", config], DEBUG);
    await waitFor(
      async () => (await fileSha256(ws.path("outbox/processed/big.bin"))) === sha256(data),
      30_000,
      "processed/big.bin",
    );
    for (const vessel of ["a", "b"] as const) {
      const after = partsSent(second.log, vessel);
      const resent = after.filter((index) => before[vessel].includes(index));
      assert.deepEqual(resent, [], `vessel ${vessel} got finished parts again`);
      assert.deepEqual(
        [...new Set([...before[vessel], ...after])].length <= PARTS,
        true,
      );
      assert.equal(
        await fileSha256(ws.path(`vessel-${vessel}/srv/inbox/big.bin`)),
        sha256(data),
      );
      assert.deepEqual(await listFiles(ws.path(`vessel-${vessel}/tmp`)), []);
    }
  } finally {
    first.kill("SIGKILL");
    second?.kill("SIGKILL");
    await first.exited();
    await second?.exited();
    await ws.cleanup();
  }
});

Deno.test("SIGTERM during a slow transfer exits within seconds; the restart finishes it", async () => {
  const { ws, config } = await slowShore(1024 * 1024);
  const data = randomBytes(CHUNK * PARTS, 12);
  await ws.write("outbox/slow.bin", data);
  const first = new CliProcess(["run", "--config", config], DEBUG);
  let second: CliProcess | undefined;
  try {
    await waitFor(() => partsSent(first.log, "a").length >= 3, 20_000, "3 parts on vessel a");
    const signalled = performance.now();
    first.kill("SIGTERM");
    const status = await first.exited();
    const took = performance.now() - signalled;
    assert.equal(status.code, 0, first.log);
    assert.ok(took < 5000, `stopping took ${took} ms`);
    assert.equal(await fileSha256(ws.path("vessel-a/srv/inbox/slow.bin")), undefined);
    assert.equal(await fileSha256(ws.path("outbox/slow.bin")), sha256(data));

    second = new CliProcess(["run", "--config", config], DEBUG);
    await waitFor(
      async () => (await fileSha256(ws.path("outbox/processed/slow.bin"))) === sha256(data),
      60_000,
      "processed/slow.bin",
    );
    assert.equal(await fileSha256(ws.path("vessel-a/srv/inbox/slow.bin")), sha256(data));
    assert.equal(await fileSha256(ws.path("vessel-b/srv/inbox/slow.bin")), sha256(data));
  } finally {
    first.kill("SIGKILL");
    second?.kill("SIGKILL");
    await first.exited();
    await second?.exited();
    await ws.cleanup();
  }
});

Deno.test("a source rewritten during its transfer is never published as a mix, and ends new", async () => {
  const { ws, config } = await slowShore(4 * 1024 * 1024);
  const oldData = randomBytes(CHUNK * PARTS, 13);
  const newData = randomBytes(CHUNK * PARTS + 1000, 14);
  const allowed = new Set([sha256(oldData), sha256(newData)]);
  const source = await ws.write("outbox/changing.bin", oldData);
  const daemon = new CliProcess(["run", "--config", config], DEBUG);
  const seen: string[] = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const vessel of ["a", "b"]) {
        const hash = await fileSha256(ws.path(`vessel-${vessel}/srv/inbox/changing.bin`));
        if (hash !== undefined) seen.push(hash);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  try {
    await waitFor(() => partsSent(daemon.log, "a").length >= 6, 20_000, "6 parts on vessel a");
    await Deno.writeFile(source, newData);
    await waitFor(
      async () => (await fileSha256(ws.path("outbox/processed/changing.bin"))) === sha256(newData),
      60_000,
      "processed/changing.bin with the new content",
    );
    for (const vessel of ["a", "b"]) {
      assert.equal(
        await fileSha256(ws.path(`vessel-${vessel}/srv/inbox/changing.bin`)),
        sha256(newData),
      );
    }
  } finally {
    polling = false;
    await poller;
    daemon.kill("SIGKILL");
    await daemon.exited();
    await ws.cleanup();
  }
  for (const hash of seen) assert.ok(allowed.has(hash), `a mixed file was visible: ${hash}`);
});

Deno.test("a source deleted during its transfer is not published and its parts are removed", async () => {
  const { ws, config } = await slowShore(2 * 1024 * 1024);
  const source = await ws.write("outbox/doomed.bin", randomBytes(CHUNK * PARTS, 15));
  const daemon = new CliProcess(["run", "--config", config], DEBUG);
  try {
    await waitFor(() => partsSent(daemon.log, "a").length >= 4, 20_000, "4 parts on vessel a");
    await Deno.remove(source);
    await daemon.waitForLog(/vanished before delivery; dropped/, 30_000);
    for (const vessel of ["a", "b"]) {
      assert.deepEqual(await listFiles(ws.path(`vessel-${vessel}/srv/inbox`)), []);
      assert.deepEqual(await listFiles(ws.path(`vessel-${vessel}/tmp`)), []);
    }
    await ws.write("outbox/after.txt", "still working");
    await waitFor(
      async () => (await fileSha256(ws.path("outbox/processed/after.txt"))) !== undefined,
      10_000,
      "the next file",
    );
  } finally {
    daemon.kill("SIGKILL");
    await daemon.exited();
    await ws.cleanup();
  }
});
