/** VesselWorker in process, against the scripted FakeTransport. */
import assert from "node:assert/strict";
import { Store } from "../store/store.ts";
import { FakeTransport } from "../../tests/fake_transport.ts";
import { TransportError } from "../../transports/transport.ts";
import type { DeliveryOutcome } from "./delivery.ts";
import { hashSource, toSourceStat } from "./source.ts";
import { VesselWorker } from "./vessel_worker.ts";

async function withWorker(
  body: (h: {
    store: Store;
    transport: FakeTransport;
    queue: (relpath: string, size: number) => Promise<number>;
    runUntil: (done: () => boolean) => Promise<void>;
    outcomes: [string, DeliveryOutcome][];
  }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-worker-" });
  const store = await Store.open(`${dir}/state.db`);
  const transport = new FakeTransport("v");
  const directory = { name: "out", location: `${dir}/out`, destination: "/srv/in" };
  await Deno.mkdir(directory.location);
  const outcomes: [string, DeliveryOutcome][] = [];
  const worker = new VesselWorker(transport, {
    store,
    chunkSize: 1024,
    retryFailed: false,
    directory: () => directory,
    fileHash: (file, path, options) =>
      file.sha256 !== null && !options?.fresh
        ? Promise.resolve(file.sha256)
        : hashSource(path, file),
    onOutcome: (delivery, outcome) => outcomes.push([delivery.file.relpath, outcome]),
    observer: {},
  });
  try {
    await body({
      store,
      transport,
      outcomes,
      async queue(relpath, size) {
        const path = `${directory.location}/${relpath}`;
        await Deno.writeFile(path, new Uint8Array(size).fill(7));
        const stat = toSourceStat(await Deno.lstat(path));
        return store.enqueue("out", relpath, stat.size, stat.mtimeMs, ["v"], stat).fileId;
      },
      async runUntil(done) {
        const abort = new AbortController();
        const running = worker.run(abort.signal);
        const deadline = Date.now() + 10_000;
        while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        abort.abort();
        await running;
        assert.ok(done(), "the worker did not get there within 10 s");
      },
    });
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("VesselWorker: an unsafe TempDir refuses the vessel for good and records why", async () => {
  await withWorker(async ({ store, transport, queue, runUntil }) => {
    await queue("a.bin", 5000);
    await queue("b.bin", 5000);
    const refusal = () => {
      throw new TransportError(
        'Cannot use TempDir on vessel "v": "/tmp/.ContentMonster" is a symbolic link',
        "unsafe",
      );
    };
    transport.script("prepare", refusal).script("prepare", refusal);
    await runUntil(() => store.counts().failed >= 1);
    const health = store.vesselHealth().find((h) => h.vessel === "v");
    assert.match(health?.lastError ?? "", /is a symbolic link/);
    assert.equal(transport.count("putPart"), 0);
    assert.equal(store.counts().pending + store.counts().failed, 2, "nothing was delivered");
  });
});

Deno.test("VesselWorker: a file too big for the free space fails alone; smaller ones go on", async () => {
  await withWorker(async ({ store, transport, queue, runUntil, outcomes }) => {
    transport.freeBytes = 3 << 20;
    await queue("huge.bin", 2 << 20);
    await queue("small.bin", 2000);
    await runUntil(() => outcomes.some(([relpath]) => relpath === "small.bin"));
    assert.deepEqual(outcomes, [["small.bin", "delivered"]]);
    assert.ok(transport.files.has("/srv/in/small.bin"));
    const health = store.vesselHealth().find((h) => h.vessel === "v");
    assert.equal(health?.lastError ?? null, null, "the vessel is not blamed");
  });
});
