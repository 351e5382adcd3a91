/** VesselWorker in process, against the scripted FakeTransport. */
import assert from "node:assert/strict";
import { Store } from "../store/store.ts";
import { FakeTransport } from "../../tests/fake_transport.ts";
import { TransportError } from "../../transports/transport.ts";
import type { DeliveryOutcome } from "./delivery.ts";
import type { DeliveryFailure } from "./observer.ts";
import { hashSource, toSourceStat } from "./source.ts";
import { VesselWorker } from "./vessel_worker.ts";
import { SMALL_IN_FLIGHT } from "./delivery_slots.ts";

async function withWorker(
  body: (h: {
    store: Store;
    transport: FakeTransport;
    worker: VesselWorker;
    queue: (relpath: string, size: number) => Promise<number>;
    runUntil: (done: () => boolean) => Promise<void>;
    outcomes: [string, DeliveryOutcome][];
    failures: (DeliveryFailure & { at: number })[];
  }) => Promise<void>,
  setup: (transport: FakeTransport) => void = () => {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-worker-" });
  const store = await Store.open(`${dir}/state.db`);
  const transport = new FakeTransport("v");
  setup(transport);
  const directory = { name: "out", location: `${dir}/out`, destination: "/srv/in" };
  await Deno.mkdir(directory.location);
  const outcomes: [string, DeliveryOutcome][] = [];
  const failures: (DeliveryFailure & { at: number })[] = [];
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
    observer: { failed: (failure) => failures.push({ ...failure, at: Date.now() }) },
  });
  try {
    await body({
      store,
      transport,
      worker,
      outcomes,
      failures,
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

/** Holds every `publish` until `release()`, counting the deliveries waiting there. */
function holdPublishes(transport: FakeTransport, count: number) {
  let waiting = 0;
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => open = resolve);
  for (let i = 0; i < count; i++) {
    transport.script("publish", async () => {
      waiting++;
      await gate;
      waiting--;
    });
  }
  return { waiting: () => waiting, release: () => open() };
}

Deno.test("VesselWorker: many small files are in flight at once, large ones only parallelDeliveries", async () => {
  await withWorker(async ({ store, transport, worker, queue, outcomes }) => {
    const until = async (done: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.ok(done(), `not reached within 10 s (${worker.inFlight} in flight)`);
    };
    const small = SMALL_IN_FLIGHT + 8;
    for (let i = 0; i < small; i++) await queue(`s${i}.bin`, 500 + i);
    const large = 6;
    const heldSmall = holdPublishes(transport, small);
    const abort = new AbortController();
    const running = worker.run(abort.signal);
    let heldLarge: ReturnType<typeof holdPublishes> | undefined;
    try {
      await until(() => heldSmall.waiting() === SMALL_IN_FLIGHT);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(worker.inFlight, SMALL_IN_FLIGHT, "no more than SMALL_IN_FLIGHT");
      heldSmall.release();
      await until(() => outcomes.length === small);
      for (let i = 0; i < small; i++) {
        const copy = transport.files.get(`/srv/in/s${i}.bin`);
        assert.deepEqual(copy, new Uint8Array(500 + i).fill(7));
      }

      // Large files keep the transport's limit: one of one part is held whole while sent.
      const held = heldLarge = holdPublishes(transport, large);
      for (let i = 0; i < large; i++) await queue(`l${i}.bin`, 3000);
      worker.notify();
      const { parallelDeliveries } = transport.capabilities;
      await until(() => held.waiting() === parallelDeliveries);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(worker.inFlight, parallelDeliveries);
      held.release();
      await until(() => outcomes.length === small + large);
      assert.deepEqual(transport.files.get("/srv/in/l5.bin"), new Uint8Array(3000).fill(7));
      assert.equal(store.counts().pending, 0);
    } finally {
      heldSmall.release(); // an assertion that failed above must not leave deliveries held
      heldLarge?.release();
      abort.abort();
      await running;
    }
  });
});

/** Counts the calls of the store's queue queries the worker's loop makes. */
function countQueueQueries(store: Store): () => number {
  let calls = 0;
  const nextDeliveries = store.nextDeliveries.bind(store);
  const nextDueAt = store.nextDueAt.bind(store);
  store.nextDeliveries = (...args) => (calls++, nextDeliveries(...args));
  store.nextDueAt = (...args) => (calls++, nextDueAt(...args));
  return () => calls;
}

Deno.test("VesselWorker: while its deliveries run, the worker waits for them instead of polling the queue", async () => {
  await withWorker(async ({ store, transport, queue, runUntil, outcomes }) => {
    // A 1 GiB file over loopback (one delivery for 15 s) made the loop ask the queue 3371
    // times: the running delivery itself looked due, so the worker slept 0 ms and asked again.
    const hold = holdPublishes(transport, 2);
    await queue("big.bin", 3000); // parts
    await queue("whole.bin", 500); // one part
    const queries = countQueueQueries(store);
    setTimeout(() => hold.release(), 500);
    await runUntil(() => outcomes.length === 2);
    assert.deepEqual(outcomes.map(([relpath]) => relpath).sort(), ["big.bin", "whole.bin"]);
    assert.ok(queries() <= 12, `the queue was asked ${queries()} times in 0.5 s`);
  });
});

Deno.test("VesselWorker: a file held back until a slot is free waits for one, without polling", async () => {
  await withWorker(async ({ store, transport, queue, runUntil, outcomes }) => {
    // Two large files fill the transport's two deliveries; the third is due but must wait.
    const hold = holdPublishes(transport, 3);
    for (const name of ["a.bin", "b.bin", "c.bin"]) await queue(name, 3000);
    const queries = countQueueQueries(store);
    setTimeout(() => hold.release(), 500);
    await runUntil(() => outcomes.length === 3);
    assert.ok(queries() <= 12, `the queue was asked ${queries()} times in 0.5 s`);
  });
});

Deno.test("VesselWorker: a link that breaks after carrying data backs off from the first step", async () => {
  const pool = {
    max: 1,
    adaptive: false,
    open: 1,
    acknowledgedBytes: 0,
    roundTripMs: undefined,
    use() {},
  };
  await withWorker(async ({ transport, queue, runUntil, outcomes, failures }) => {
    const cut = (carried: number) => () => {
      pool.acknowledgedBytes += carried;
      throw new TransportError("Connection to vessel v closed", "connection");
    };
    // Three tries that each moved 64 KiB (kept by resume), then one that moved nothing.
    for (const carried of [65536, 65536, 65536, 0]) transport.script("prepare", cut(carried));
    await queue("a.bin", 5000);
    await runUntil(() => outcomes.length === 1);
    const waits = failures.map(({ retryAt, at }) => (retryAt - at) / 1000);
    assert.equal(waits.length, 4, `waits ${waits.join(", ")} s`);
    // The back-off is 1 s, doubling, +-20 %: 0.8-1.2 s is its first step.
    for (const wait of waits.slice(0, 3)) assert.ok(wait <= 1.25, `waits ${waits.join(", ")} s`);
    assert.ok(waits[3] >= 1.55, `a try without progress doubles the wait: ${waits.join(", ")} s`);
  }, (transport) => Object.assign(transport, { connections: pool }));
});
