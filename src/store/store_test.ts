import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { MIGRATIONS } from "./migrations.ts";
import { Store, type VesselHealthRecord } from "./store.ts";

/** Runs `work` with a store on a fresh database file below a temp dir. */
async function withStore(work: (store: Store, path: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "cm-store-" });
  const path = `${dir}/state/cm.db`;
  const store = await Store.open(path);
  try {
    await work(store, path);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A vessel health record with defaults for what a test does not care about. */
function health(vessel: string, fields: Partial<VesselHealthRecord> = {}): VesselHealthRecord {
  return {
    vessel,
    state: "idle",
    since: null,
    backoffUntil: null,
    lastError: null,
    failingSince: null,
    lastSuccessAt: null,
    bytesPerSecond: 0,
    updatedAt: null,
    ...fields,
  };
}

/** The ids of `vessel`'s deliveries that are due now, failed ones included. */
function dueIds(store: Store, vessel: string): number[] {
  return store.nextDeliveries(vessel, Date.now(), 1000, [], true).map((d) => d.id);
}

/** The delivery of `fileId` to `vessel` that is due now. */
function deliveryOf(store: Store, fileId: number, vessel: string) {
  const found = store.nextDeliveries(vessel, Date.now(), 1000, [], true)
    .find((d) => d.file.id === fileId);
  assert.ok(found, `no due delivery of file ${fileId} to "${vessel}"`);
  return found;
}

Deno.test("Store.open() creates the database, its directory and the schema", async () => {
  await withStore((store, path) => {
    assert.match(store.instanceId, /^[0-9a-f]{12}$/);
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      assert.equal(db.prepare("PRAGMA user_version").get()?.user_version, MIGRATIONS.length);
      assert.equal(db.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .all().map((row) => row.name);
      assert.deepEqual(tables, [
        "deliveries",
        "files",
        "meta",
        "parts",
        "sqlite_sequence",
        "unaddressable_files",
        "vessels",
      ]);
    } finally {
      db.close();
    }
  });
});

Deno.test("Store.open() creates the database and its directory closed to other users", async () => {
  await withStore(async (store, path) => {
    // File names, sizes and hashes of Locations that may be closed to others.
    await store.grouped(() => store.enqueue("d", "secret-plans.pdf", 1, 1, ["v"]));
    const mode = async (name: string) => ((await Deno.stat(name)).mode! & 0o777).toString(8);
    assert.equal(await mode(path.slice(0, path.lastIndexOf("/"))), "700");
    for (const name of [path, `${path}-wal`, `${path}-shm`]) {
      assert.equal(await mode(name), "600", name);
    }
  });
});

Deno.test("Store.open() again keeps the data and the instance id", async () => {
  await withStore(async (store, path) => {
    const { fileId } = store.enqueue("out", "a.bin", 10, 1000, ["a"], {
      dev: 2049,
      ino: 77,
      ctimeMs: 1500,
    });
    store.recordVesselHealth(health("a", { lastError: "connection refused" }));
    store.close();
    const again = await Store.open(path);
    try {
      assert.equal(again.instanceId, store.instanceId);
      assert.deepEqual(again.fileAt("out", "a.bin"), {
        id: fileId,
        directory: "out",
        relpath: "a.bin",
        size: 10,
        mtimeMs: 1000,
        version: 1,
        sha256: null,
        dev: 2049,
        ino: 77,
        ctimeMs: 1500,
      });
      assert.equal(again.vesselHealth()[0].lastError, "connection refused");
      assert.deepEqual(again.counts(), { files: 1, pending: 1, failed: 0 });
    } finally {
      again.close();
    }
  });
});

Deno.test("Store instance ids differ between databases", async () => {
  await withStore(async (first) => {
    await withStore((second) => assert.notEqual(first.instanceId, second.instanceId));
  });
});

Deno.test("Store.enqueue() tells new, unchanged and changed files apart", async () => {
  await withStore((store) => {
    const first = store.enqueue("out", "a.bin", 10, 1000, ["a", "b"]);
    assert.equal(first.result, "new");
    const same = store.enqueue("out", "a.bin", 10, 1000, ["a", "b"]);
    assert.deepEqual(same, { fileId: first.fileId, result: "unchanged" });
    assert.equal(store.file(first.fileId)?.version, 1);
    assert.equal(dueIds(store, "a").length, 1, "no duplicate delivery");

    assert.equal(store.enqueue("out", "a.bin", 11, 1000, ["a", "b"]).result, "changed");
    assert.equal(store.file(first.fileId)?.version, 2);
    assert.equal(store.enqueue("out", "a.bin", 11, 2000, ["a", "b"]).result, "changed");
    assert.equal(store.file(first.fileId)?.version, 3, "an mtime change alone is a new version");

    // The same relpath in another directory is another file.
    const other = store.enqueue("in", "a.bin", 11, 2000, ["a"]);
    assert.equal(other.result, "new");
    assert.notEqual(other.fileId, first.fileId);
  });
});

Deno.test("Store.enqueue() of a changed file restarts its deliveries and forgets its parts", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 100, 1000, ["a", "b"]);
    const a = deliveryOf(store, fileId, "a");
    store.markPublishing(a.id, 1, "aa".repeat(32));
    const b = deliveryOf(store, fileId, "b");
    store.startParts(a.id, 1);
    store.markPartDone(a.id, 0);
    store.markPartDone(a.id, 1);
    store.markPartDone(b.id, 0);
    assert.equal(store.partsDone(a.id), 2);
    assert.equal(store.markDelivered(a.id, 1), true);
    store.markAttemptFailed(b.id, "timeout", Date.now() + 60_000, false);
    assert.equal(store.delivery(a.id)?.state, "done");

    assert.equal(store.enqueue("out", "a.bin", 200, 2000, ["a", "b"]).result, "changed");
    const file = store.file(fileId);
    assert.equal(file?.version, 2);
    assert.equal(file?.size, 200);
    assert.equal(file?.mtimeMs, 2000);
    assert.equal(file?.sha256, null, "the old hash is forgotten");
    for (const id of [a.id, b.id]) {
      const delivery = store.delivery(id);
      assert.equal(delivery?.state, "pending");
      assert.equal(delivery?.attempts, 0);
      assert.equal(delivery?.lastError, null);
      assert.equal(store.partsDone(id), 0);
    }
    // A late rename of the old version's copy must not name the new version's.
    assert.equal(store.delivery(a.id)?.publishes, 1, "publishes are never forgotten");
    assert.deepEqual(
      store.nextDeliveries("b", Date.now(), 10, [], false).map((d) => d.id),
      [b.id],
      "the back-off of the old version no longer applies",
    );
    assert.equal(store.isFileDone(fileId), false);
  });
});

Deno.test("Store.enqueue() tells a same-size, same-mtime replacement by its inode or ctime", async () => {
  await withStore((store) => {
    const identity = { dev: 1, ino: 10, ctimeMs: 100 };
    const { fileId } = store.enqueue("out", "a.bin", 10, 1000, ["a"], identity);
    assert.equal(store.enqueue("out", "a.bin", 10, 1000, ["a"], identity).result, "unchanged");
    const copied = { ...identity, ino: 11, ctimeMs: 200 }; // cp -p, tar x, rsync -a
    assert.equal(store.enqueue("out", "a.bin", 10, 1000, ["a"], copied).result, "changed");
    assert.equal(store.file(fileId)!.version, 2);
    assert.equal(store.file(fileId)!.ino, 11);
    const touched = { ...copied, ctimeMs: 300 }; // chmod, or an in-place rewrite with touch -r
    assert.equal(store.enqueue("out", "a.bin", 10, 1000, ["a"], touched).result, "changed");
  });
});

Deno.test("Store.enqueue() with more vessels adds the missing deliveries", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    assert.equal(store.enqueue("out", "a.bin", 1, 1, ["a", "b"]).result, "unchanged");
    assert.equal(deliveryOf(store, fileId, "b").file.id, fileId);
  });
});

Deno.test("Store.fileChanged() makes a new version like a changed enqueue", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    const a = deliveryOf(store, fileId, "a");
    store.markPartDone(a.id, 0);
    store.fileChanged(fileId, 5, 6, { dev: 1, ino: 2, ctimeMs: 7 });
    assert.deepEqual(
      { ...store.file(fileId)!, id: 0 },
      {
        id: 0,
        directory: "out",
        relpath: "a.bin",
        size: 5,
        mtimeMs: 6,
        version: 2,
        sha256: null,
        dev: 1,
        ino: 2,
        ctimeMs: 7,
      },
    );
    assert.equal(store.partsDone(a.id), 0);
  });
});

Deno.test("Store.reconcile() adds deliveries for a new vessel and drops unfinished ones to a removed vessel", async () => {
  await withStore((store) => {
    const done = store.enqueue("out", "done.bin", 1, 1, ["a", "b"]).fileId;
    const open = store.enqueue("out", "open.bin", 2, 1, ["a", "b"]).fileId;
    const elsewhere = store.enqueue("other", "x.bin", 3, 1, ["b"]).fileId;
    const doneToB = deliveryOf(store, done, "b");
    assert.equal(store.markDelivered(doneToB.id, 1), true);
    const failedToB = deliveryOf(store, open, "b");
    store.markAttemptFailed(failedToB.id, "auth", 0, true);

    store.reconcile("out", ["a", "c"]);

    assert.equal(store.delivery(doneToB.id)?.state, "done", "a done delivery stays");
    assert.equal(store.delivery(failedToB.id), undefined, "a failed delivery goes");
    assert.deepEqual(
      store.nextDeliveries("c", Date.now(), 10, [], true).map((d) => d.file.id),
      [done, open],
    );
    assert.deepEqual(
      store.nextDeliveries("a", Date.now(), 10, [], true).map((d) => d.file.id),
      [done, open],
    );
    assert.deepEqual(
      store.nextDeliveries("b", Date.now(), 10, [], true).map((d) => d.file.id),
      [elsewhere],
      "other directories are untouched",
    );

    store.reconcile("out", ["a", "c"]);
    assert.equal(dueIds(store, "c").length, 2, "reconcile is idempotent");
    assert.deepEqual(store.orphanDirectories(["out"]), ["other"]);
    assert.deepEqual(store.orphanDirectories(["out", "other"]), []);
  });
});

Deno.test("Store.nextDeliveries() respects the back-off time", async () => {
  await withStore((store) => {
    const now = 1_000_000;
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    const id = deliveryOf(store, fileId, "a").id;
    store.markAttemptFailed(id, "timeout", now + 5000, false);
    assert.deepEqual(store.nextDeliveries("a", now, 10, [], false), []);
    assert.deepEqual(store.nextDeliveries("a", now + 4999, 10, [], true), []);
    const due = store.nextDeliveries("a", now + 5000, 10, [], false);
    assert.equal(due.length, 1);
    assert.equal(due[0].state, "pending");
    assert.equal(due[0].attempts, 1);
    assert.equal(due[0].lastError, "timeout");
    assert.equal(store.nextDueAt("a", false), now + 5000);
    assert.equal(store.nextDueAt("a", false, [id]), undefined, "a running delivery is not due");
    assert.equal(store.nextDueAt("nobody", true), undefined);
  });
});

Deno.test("Store.nextDeliveries() skips busy ids, other vessels and done deliveries", async () => {
  await withStore((store) => {
    const ids = ["x", "y", "z"].map((name) => {
      const { fileId } = store.enqueue("out", name, 1, 1, ["a", "b"]);
      return deliveryOf(store, fileId, "a").id;
    });
    assert.deepEqual(store.nextDeliveries("a", Date.now(), 10, [ids[0]], false).map((d) => d.id), [
      ids[1],
      ids[2],
    ]);
    assert.deepEqual(
      store.nextDeliveries("a", Date.now(), 10, new Set([ids[0], ids[2]]), false).map((d) => d.id),
      [ids[1]],
    );
    assert.equal(store.markDelivered(ids[1], 1), true);
    assert.deepEqual(store.nextDeliveries("a", Date.now(), 10, [], true).map((d) => d.id), [
      ids[0],
      ids[2],
    ]);
    assert.equal(store.nextDeliveries("b", Date.now(), 10, [], false).length, 3);
    assert.deepEqual(store.nextDeliveries("c", Date.now(), 10, [], true), []);
  });
});

Deno.test("Store.nextDeliveries() returns failed deliveries only with includeFailed", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    const id = deliveryOf(store, fileId, "a").id;
    store.markAttemptFailed(id, "Authentication failed", 0, true);
    assert.equal(store.delivery(id)?.state, "failed");
    assert.deepEqual(store.nextDeliveries("a", Date.now(), 10, [], false), []);
    assert.equal(store.nextDueAt("a", false), undefined);
    const failed = store.nextDeliveries("a", Date.now(), 10, [], true);
    assert.equal(failed.length, 1);
    assert.equal(failed[0].state, "failed");
    assert.equal(failed[0].lastError, "Authentication failed");
    assert.equal(store.nextDueAt("a", true), 0);

    assert.equal(store.retryFailed(), 1);
    assert.equal(store.delivery(id)?.state, "pending");
    assert.equal(store.nextDeliveries("a", Date.now(), 10, [], false).length, 1);
  });
});

Deno.test("Store.nextDeliveries() returns the oldest files first, up to the limit", async () => {
  await withStore((store) => {
    for (const name of ["c", "a", "b", "d"]) store.enqueue("out", name, 1, 1, ["v"]);
    const all = store.nextDeliveries("v", Date.now(), 10, [], false);
    assert.deepEqual(all.map((d) => d.file.relpath), ["c", "a", "b", "d"]);
    const two = store.nextDeliveries("v", Date.now(), 2, [], false);
    assert.deepEqual(two.map((d) => d.file.relpath), ["c", "a"]);
    // A changed file keeps its place in the queue.
    store.enqueue("out", "c", 2, 2, ["v"]);
    assert.equal(store.nextDeliveries("v", Date.now(), 1, [], false)[0].file.relpath, "c");
  });
});

Deno.test("Store.markPublishing() and markDelivered() refuse a version that moved on", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    const id = deliveryOf(store, fileId, "a").id;
    store.markPartDone(id, 0);
    store.fileChanged(fileId, 2, 2);
    assert.equal(store.markPublishing(id, 1, "cd".repeat(32)), false);
    assert.equal(store.delivery(id)?.state, "pending");
    assert.equal(store.markDelivered(id, 1), false);
    assert.equal(store.delivery(id)?.state, "pending");
    assert.equal(store.isFileDone(fileId), false);

    store.startParts(id, 2);
    assert.equal(store.delivery(id)?.partsVersion, 2);
    store.markPartDone(id, 0);
    store.markPartDone(id, 0);
    assert.equal(store.partsDone(id), 1, "a part is counted once");
    assert.equal(store.delivery(id)?.publishes, 0, "a refused publish is not counted");
    assert.equal(store.markPublishing(id, 2, "cd".repeat(32)), true);
    const publishing = store.delivery(id);
    assert.equal(publishing?.state, "publishing");
    assert.equal(publishing?.publishes, 1, "the next try names its files anew");
    assert.equal(publishing?.partsVersion, null, "the parts go while the file is published");
    assert.equal(store.partsDone(id), 0);
    assert.equal(
      store.nextDeliveries("a", Date.now(), 10, [], false)[0]?.id,
      id,
      "a publishing delivery is resumed after a crash",
    );
    store.markAttemptFailed(id, "connection lost", 0, false);
    assert.equal(
      store.delivery(id)?.state,
      "publishing",
      "a transient failure while publishing keeps it publishing: the rename may have happened",
    );
    assert.equal(store.markDelivered(id, 2), true);
    const done = store.delivery(id);
    assert.equal(done?.state, "done");
    assert.equal(done?.lastError, null);
    assert.equal(done?.attempts, 0);
    assert.equal(store.partsDone(id), 0, "parts of a delivered file are forgotten");
    store.markAttemptFailed(id, "late failure", 0, false);
    assert.equal(store.delivery(id)?.state, "done", "a late transient failure keeps it done");
  });
});

Deno.test("Store.markPublishing() keeps the hash only of the current version", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a"]);
    const id = deliveryOf(store, fileId, "a").id;
    store.fileChanged(fileId, 2, 2);
    assert.equal(store.markPublishing(id, 1, "11".repeat(32)), false);
    assert.equal(store.file(fileId)?.sha256, null);
    assert.equal(store.markPublishing(id, 2, "22".repeat(32)), true);
    assert.equal(store.file(fileId)?.sha256, "22".repeat(32));
  });
});

Deno.test("Store.isFileDone() and doneFiles() wait for every delivery", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a", "b"]);
    const other = store.enqueue("out", "b.bin", 1, 1, ["a", "b"]).fileId;
    assert.equal(store.isFileDone(fileId), false);
    assert.deepEqual(store.doneFiles(), []);
    store.markDelivered(deliveryOf(store, fileId, "a").id, 1);
    assert.equal(store.isFileDone(fileId), false);
    assert.deepEqual(store.doneFiles(), []);
    const toB = deliveryOf(store, fileId, "b").id;
    store.markAttemptFailed(toB, "auth", 0, true);
    assert.equal(store.isFileDone(fileId), false, "a failed delivery is not done");
    assert.equal(store.markDelivered(toB, 1), true);
    assert.equal(store.isFileDone(fileId), true);
    assert.deepEqual(store.doneFiles().map((f) => f.id), [fileId]);
    assert.equal(store.isFileDone(other), false);

    // A file whose every vessel ignores it has no deliveries: it is done.
    const ignored = store.enqueue("photos", "p.jpg", 1, 1, []).fileId;
    assert.equal(store.isFileDone(ignored), true);
    assert.equal(store.hasDeliveries(ignored), false);
    assert.deepEqual(store.doneFiles().map((f) => f.id), [fileId, ignored]);

    store.removeFile(fileId);
    assert.equal(store.file(fileId), undefined);
    assert.equal(store.delivery(toB), undefined, "deliveries go with their file");
    assert.deepEqual(store.doneFiles().map((f) => f.id), [ignored]);
  });
});

Deno.test("Store.dropDelivery() leaves the file until its last delivery is gone", async () => {
  await withStore((store) => {
    const { fileId } = store.enqueue("out", "a.bin", 1, 1, ["a", "b"]);
    store.dropDelivery(deliveryOf(store, fileId, "a").id);
    assert.equal(store.hasDeliveries(fileId), true);
    store.dropDelivery(deliveryOf(store, fileId, "b").id);
    assert.equal(store.hasDeliveries(fileId), false);
    assert.ok(store.file(fileId));
  });
});

Deno.test("Store.counts() counts queued files, pending and failed deliveries", async () => {
  await withStore((store) => {
    assert.deepEqual(store.counts(), { files: 0, pending: 0, failed: 0 });
    const one = store.enqueue("out", "1", 1, 1, ["a", "b"]).fileId;
    const two = store.enqueue("out", "2", 1, 1, ["a", "b"]).fileId;
    assert.deepEqual(store.counts(), { files: 2, pending: 4, failed: 0 });
    store.markDelivered(deliveryOf(store, one, "a").id, 1);
    store.markPublishing(deliveryOf(store, one, "b").id, 1, "cd".repeat(32));
    store.markAttemptFailed(deliveryOf(store, two, "a").id, "auth", 0, true);
    store.markAttemptFailed(deliveryOf(store, two, "b").id, "timeout", Date.now() + 1e6, false);
    assert.deepEqual(store.counts(), { files: 2, pending: 2, failed: 1 });
  });
});

Deno.test("Store.queueStatus() sums files, bytes, progress and failures per directory and vessel", async () => {
  await withStore((store) => {
    assert.deepEqual(store.queueStatus(), []);
    const small = store.enqueue("out", "small", 100, 1, ["a", "b"]).fileId;
    const big = store.enqueue("out", "big", 250, 1, ["a", "b"]).fileId;
    const third = store.enqueue("out", "third", 1000, 1, ["a"]).fileId;
    store.enqueue("photos", "p.jpg", 7, 1, ["b"]);

    store.markDelivered(deliveryOf(store, small, "a").id, 1);
    store.markPartDone(deliveryOf(store, big, "a").id, 0); // in progress: parts sent
    store.markPublishing(deliveryOf(store, third, "a").id, 1, "cd".repeat(32)); // in progress: publishing
    store.markAttemptFailed(deliveryOf(store, small, "b").id, "disk full", 0, true);
    store.markAttemptFailed(deliveryOf(store, big, "b").id, "timeout", Date.now() + 1e6, false);

    assert.deepEqual(store.queueStatus(), [
      {
        directory: "out",
        vessel: "a",
        queuedFiles: 2,
        queuedBytes: 1250,
        inProgress: 2,
        failed: 0,
        lastError: null,
      },
      {
        directory: "out",
        vessel: "b",
        queuedFiles: 2,
        queuedBytes: 350,
        inProgress: 0,
        failed: 1,
        lastError: "timeout",
      },
      {
        directory: "photos",
        vessel: "b",
        queuedFiles: 1,
        queuedBytes: 7,
        inProgress: 0,
        failed: 0,
        lastError: null,
      },
    ]);
  });
});

Deno.test("Store.recordVesselHealth() keeps the last record of each vessel for vesselHealth()", async () => {
  await withStore((store) => {
    assert.deepEqual(store.vesselHealth(), []);
    const failing = health("b", {
      state: "backing-off",
      since: 1_000,
      backoffUntil: 9_000,
      lastError: "connection refused",
      failingSince: 1_000,
      lastSuccessAt: 500,
      bytesPerSecond: 4096,
      updatedAt: 2_000,
    });
    store.recordVesselHealth(failing);
    store.recordVesselHealth(health("a", { state: "connected", since: 3_000 }));
    assert.deepEqual(store.vesselHealth(), [
      health("a", { state: "connected", since: 3_000 }),
      failing,
    ]);
    const back = health("b", { state: "connected", since: 9_500, lastSuccessAt: 9_600 });
    store.recordVesselHealth(back);
    assert.deepEqual(store.vesselHealth()[1], back);
  });
});

Deno.test("Store.oldestWaiting() names each directory's longest-waiting file and counts the rest", async () => {
  await withStore(async (store) => {
    store.enqueue("out", "first.bin", 1, 1, ["a"]);
    await new Promise((resolve) => setTimeout(resolve, 5));
    store.enqueue("out", "second.bin", 1, 1, ["a"]);
    store.enqueue("other", "x", 1, 1, ["a"]);
    const oldest = store.oldestWaiting();
    assert.deepEqual(oldest.map((o) => [o.directory, o.relpath, o.files]), [
      ["other", "x", 1],
      ["out", "first.bin", 2],
    ]);
    assert.ok(oldest[1].queuedAt < oldest[0].queuedAt && oldest[1].queuedAt <= Date.now());
  });
});

Deno.test("Store.open() refuses a database from a newer ContentMonster and leaves it alone", async () => {
  await withStore(async (store, path) => {
    store.enqueue("out", "a.bin", 1, 1, ["a"]);
    store.close();
    const future = MIGRATIONS.length + 41;
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${future}`);
    db.close();

    const error = await Store.open(path).then(
      () => assert.fail("a newer schema was accepted"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof Error);
    assert.equal(error.message, `Cannot open state database "${path}"`);
    assert.ok(error.cause instanceof Error);
    assert.equal(
      error.cause.message,
      `schema version ${future} is newer than this ContentMonster knows (${MIGRATIONS.length})`,
    );

    const check = new DatabaseSync(path, { readOnly: true });
    try {
      assert.equal(check.prepare("PRAGMA user_version").get()?.user_version, future);
      assert.equal(check.prepare("SELECT COUNT(*) AS n FROM files").get()?.n, 1);
    } finally {
      check.close();
    }
  });
});

Deno.test("Store commits survive a store that is never closed", async () => {
  await withStore(async (store, path) => {
    const { fileId } = store.enqueue("out", "a.bin", 10, 1000, ["a", "b"]);
    const id = deliveryOf(store, fileId, "a").id;
    store.startParts(id, 1);
    store.markPartDone(id, 0);
    store.markPartDone(id, 3);
    store.markAttemptFailed(deliveryOf(store, fileId, "b").id, "timeout", 42, false);

    const second = await Store.open(path); // the first one "crashed": never closed
    try {
      assert.equal(second.instanceId, store.instanceId);
      assert.equal(second.partsDone(id), 2);
      assert.equal(second.delivery(id)?.partsVersion, 1);
      assert.equal(second.nextDueAt("b", false), 42);
      assert.deepEqual(second.counts(), { files: 1, pending: 2, failed: 0 });
      // Both handles can write; the second sees the first's later commits.
      store.markDelivered(id, 1);
      assert.equal(second.delivery(id)?.state, "done");
    } finally {
      second.close();
    }
  });
});

Deno.test("Store commits survive kill -9 of the process that made them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cm-store-" });
  const path = `${dir}/cm.db`;
  const storeUrl = new URL("./store.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { Store } from ${JSON.stringify(storeUrl)};
       const store = await Store.open(${JSON.stringify(path)});
       store.enqueue("out", "a.bin", 10, 1000, ["a"]);
       store.markPartDone(store.nextDeliveries("a", Date.now(), 1, [], false)[0].id, 0);
       console.log("committed " + store.instanceId);
       await new Promise(() => setInterval(() => {}, 1000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let output = "";
    while (!output.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      output += value;
    }
    child.kill("SIGKILL");
    await reader.cancel();
    await child.status;
    const instanceId = /^committed (\w+)/.exec(output)?.[1];
    assert.ok(instanceId, `child said: ${output}`);

    const store = await Store.open(path);
    try {
      assert.equal(store.instanceId, instanceId);
      const file = store.fileAt("out", "a.bin");
      assert.equal(file?.size, 10);
      assert.equal(store.partsDone(deliveryOf(store, file!.id, "a").id), 1);
    } finally {
      store.close();
    }
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Runs `body` on a store opened on a database made at schema `version`
 * holding `rows` (SQL), then removes the database.
 */
async function withUpgraded(
  version: number,
  rows: string,
  body: (store: Store) => void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-store-" });
  const path = `${dir}/cm.db`;
  try {
    const db = new DatabaseSync(path);
    db.exec("PRAGMA foreign_keys = ON");
    for (const migration of MIGRATIONS.slice(0, version)) db.exec(migration);
    db.exec(`PRAGMA user_version = ${version}`);
    db.exec(rows);
    db.close();
    const store = await Store.open(path);
    try {
      body(store);
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Store.open() upgrades a version 1 database: vessel errors become idle health records", async () => {
  await withUpgraded(
    1,
    "INSERT INTO vessels (name, last_error, error_at) VALUES ('a', 'connection refused', 1234);",
    (store) => {
      assert.deepEqual(store.vesselHealth(), [
        health("a", { lastError: "connection refused", failingSince: 1234 }),
      ]);
    },
  );
});

Deno.test("Store.open() upgrades a version 5 database: deliveries and their parts stay", async () => {
  await withUpgraded(
    5,
    `INSERT INTO files (id, directory, relpath, size, mtime_ms, queued_at)
       VALUES (3, 'out', 'a.bin', 10, 1000, 1);
     INSERT INTO deliveries (id, file_id, vessel, state, parts_version, attempts)
       VALUES (7, 3, 'a', 'pending', 1, 2);
     INSERT INTO parts (delivery_id, idx) VALUES (7, 0), (7, 4);`,
    (store) => {
      const delivery = deliveryOf(store, 3, "a");
      assert.equal(delivery.id, 7);
      assert.equal(delivery.partsVersion, 1);
      assert.equal(delivery.attempts, 2);
      assert.equal(store.partsDone(7), 2);
      // Ids go on from the highest one, and the parts still go with their delivery.
      const { fileId } = store.enqueue("out", "b.bin", 10, 1000, ["a"]);
      assert.ok(deliveryOf(store, fileId, "a").id > 7);
      store.removeFile(3);
      assert.equal(store.partsDone(7), 0);
    },
  );
});

Deno.test("Store.open() upgrades a version 6 database: a delivery publishing then names its next copy anew", async () => {
  await withUpgraded(
    6,
    `INSERT INTO files (id, directory, relpath, size, mtime_ms, queued_at)
       VALUES (3, 'out', 'a.bin', 10, 1000, 1), (4, 'out', 'b.bin', 10, 1000, 1);
     INSERT INTO deliveries (id, file_id, vessel, state) VALUES (7, 3, 'a', 'publishing');
     INSERT INTO deliveries (id, file_id, vessel, state) VALUES (8, 4, 'a', 'pending');`,
    (store) => {
      // Its rename may have left before the upgrade, naming the copy of publishes 0.
      assert.equal(deliveryOf(store, 3, "a").publishes, 1);
      assert.equal(deliveryOf(store, 4, "a").publishes, 0);
    },
  );
});

Deno.test("Store.grouped() commits the work of one turn in one transaction", async () => {
  await withStore(async (store, path) => {
    const ids = Array.from({ length: 50 }, (_, i) => {
      const { fileId } = store.enqueue("out", `f${i}`, 1, 1, ["a"]);
      return deliveryOf(store, fileId, "a").id;
    });
    const walBytes = () => Deno.statSync(`${path}-wal`).size;
    const before = walBytes();
    const delivered = await Promise.all(
      ids.map((id) => store.grouped(() => store.markDelivered(id, 1))),
    );
    assert.deepEqual(delivered, ids.map(() => true));
    // Each commit appends its own copy of every page it changed (4 KiB each): fifty
    // commits of the same few pages would add hundreds of KiB.
    const added = walBytes() - before;
    assert.ok(added < 20 * 4096, `the WAL grew by ${added} bytes for one group`);
    const reader = new DatabaseSync(path, { readOnly: true });
    try {
      const done = reader.prepare("SELECT COUNT(*) AS n FROM deliveries WHERE state = 'done'")
        .get();
      assert.equal(done?.n, 50, "committed once the promises resolve");
    } finally {
      reader.close();
    }
  });
});

Deno.test("Store.grouped() undoes a failing work alone and flushes on close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cm-store-" });
  try {
    const path = `${dir}/cm.db`;
    const store = await Store.open(path);
    const a = store.enqueue("out", "a", 1, 1, ["v"]).fileId;
    const b = store.enqueue("out", "b", 1, 1, ["v"]).fileId;
    const c = store.enqueue("out", "c", 1, 1, ["v"]).fileId;
    const first = store.grouped(() => store.removeFile(a));
    const failing = store.grouped(() => {
      store.removeFile(b);
      // markDelivered opens a transaction of its own: inside a group it nests.
      store.markDelivered(deliveryOf(store, c, "v").id, 1);
      throw new Error("boom");
    });
    const last = store.grouped(() => store.markPublishing(deliveryOf(store, c, "v").id, 1, "ab"));
    store.close(); // before the group's timer: closing commits what is queued
    await first;
    await assert.rejects(failing, /boom/);
    assert.equal(await last, true);

    const reopened = await Store.open(path);
    try {
      assert.equal(reopened.file(a), undefined);
      assert.ok(reopened.file(b), "the failing work's removal was undone");
      assert.equal(reopened.fileAt("out", "c")?.sha256, "ab");
      assert.equal(reopened.delivery(deliveryOf(reopened, c, "v").id)?.state, "publishing");
    } finally {
      reopened.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a delivery's id is never given again, even after the queue emptied and a restart", async () => {
  await withStore(async (store, path) => {
    // Its id names the delivery's files on the vessel: a late operation of a finished delivery
    // (a slow connection's write, its removal) must not reach the files of a later one.
    const used = new Set<number>();
    const deliverAndForget = (s: Store, relpath: string) => {
      const { fileId } = s.enqueue("out", relpath, 10, 1000, ["a"]);
      const { id } = deliveryOf(s, fileId, "a");
      assert.ok(!used.has(id), `delivery id ${id} given twice`);
      used.add(id);
      s.removeFile(fileId);
    };
    deliverAndForget(store, "first.bin");
    deliverAndForget(store, "second.bin");
    store.close();
    const again = await Store.open(path);
    try {
      deliverAndForget(again, "third.bin");
    } finally {
      again.close();
    }
  });
});
