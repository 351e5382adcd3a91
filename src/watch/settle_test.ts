import assert from "node:assert/strict";
import { type FileStat, type SettleOptions, Settler } from "./settle.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Report {
  relpath: string;
  stat: FileStat;
  at: number;
}

/** A settler on a fresh temp dir that records what it reports. */
async function withSettler(
  options: SettleOptions,
  fn: (root: string, settler: Settler, reports: Report[]) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "settle_test_" });
  const reports: Report[] = [];
  const settler = new Settler(
    root,
    (relpath, stat) => reports.push({ relpath, stat, at: Date.now() }),
    options,
  );
  try {
    await fn(root, settler, reports);
  } finally {
    settler.close();
    await Deno.remove(root, { recursive: true });
  }
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`Timed out waiting for ${what}`);
    await sleep(5);
  }
}

Deno.test("Settler reports a closed file after settleMs, once", async () => {
  await withSettler({ settleMs: 50, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/a.txt`, "hello");
    const closedAt = Date.now();
    settler.note("a.txt", "closed");
    assert.equal(settler.pending, 1);
    await waitFor("the report", () => reports.length === 1);
    assert.equal(reports[0].relpath, "a.txt");
    assert.equal(reports[0].stat.size, 5);
    assert.ok(reports[0].at - closedAt >= 50, "reported before it settled");
    assert.equal(settler.pending, 0);

    settler.note("a.txt", "closed"); // opened for writing and closed without a change
    await waitFor("the settle", () => settler.pending === 0);
    await sleep(100);
    assert.equal(reports.length, 1);
  });
});

Deno.test("Settler waits quietMs for a file never seen closed", async () => {
  await withSettler({ settleMs: 20, quietMs: 400 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/fresh.txt`, "x");
    const writtenAt = Date.now();
    settler.note("fresh.txt", "written");
    await sleep(250);
    assert.equal(reports.length, 0);
    await waitFor("the report", () => reports.length === 1);
    assert.ok(reports[0].at - writtenAt >= 380, `reported after ${reports[0].at - writtenAt} ms`);
  });
});

Deno.test("Settler reports a scanned file with an old mtime after settleMs", async () => {
  await withSettler({ settleMs: 20, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/old.txt`, "old");
    const old = new Date(Date.now() - 3600_000);
    await Deno.utime(`${root}/old.txt`, old, old);
    const info = await Deno.lstat(`${root}/old.txt`);
    settler.note("old.txt", "scanned", { size: 3, mtimeMs: old.getTime(), ino: info.ino });
    await waitFor("the report", () => reports.length === 1, 1000);
    assert.equal(reports[0].stat.mtimeMs, old.getTime());
  });
});

Deno.test("Settler reports a trusted fresh file after settleMs", async () => {
  await withSettler({ settleMs: 20, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/t.txt`, "t");
    settler.note("t.txt", "trusted");
    await waitFor("the report", () => reports.length === 1, 1000);
  });
});

Deno.test("Settler does not report a closed file that grows again until it is closed again", async () => {
  await withSettler({ settleMs: 80, quietMs: 60_000 }, async (root, settler, reports) => {
    const file = await Deno.open(`${root}/grow.txt`, { write: true, create: true });
    try {
      await file.write(new Uint8Array(10));
      settler.note("grow.txt", "closed");
      await sleep(30);
      await file.write(new Uint8Array(10)); // within the settle window: written again
      await sleep(300);
      assert.equal(reports.length, 0);
    } finally {
      file.close();
    }
    settler.note("grow.txt", "closed");
    await waitFor("the report", () => reports.length === 1);
    assert.equal(reports[0].stat.size, 20);
  });
});

Deno.test("Settler reports a new version and skips a scanned version it already reported", async () => {
  await withSettler({ settleMs: 20, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/v.txt`, "one");
    settler.note("v.txt", "closed");
    await waitFor("the first report", () => reports.length === 1);
    const first = reports[0].stat;
    settler.note("v.txt", "scanned", first);
    assert.equal(settler.pending, 0, "an unchanged scanned file is not even queued");

    await Deno.writeTextFile(`${root}/v.txt`, "two!", { append: true });
    settler.note("v.txt", "closed");
    await waitFor("the second report", () => reports.length === 2);
    assert.equal(reports[1].stat.size, 7);

    settler.forget("v.txt");
    settler.note("v.txt", "closed");
    await waitFor("the report after forget()", () => reports.length === 3);
    assert.deepEqual(reports[2].stat, reports[1].stat);
  });
});

Deno.test("Settler drops a file that disappears before it settles", async () => {
  await withSettler({ settleMs: 50, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/gone.txt`, "g");
    settler.note("gone.txt", "closed");
    await Deno.remove(`${root}/gone.txt`);
    await waitFor("the drop", () => settler.pending === 0);
    await Deno.mkdir(`${root}/dir`);
    settler.note("dir", "written"); // a directory is not a file
    await waitFor("the drop", () => settler.pending === 0);
    assert.equal(reports.length, 0);
  });
});

Deno.test("Settler.dropTree() and verify() forget vanished files", async () => {
  await withSettler({ settleMs: 10, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.mkdir(`${root}/d/e`, { recursive: true });
    await Deno.writeTextFile(`${root}/d/a.txt`, "a");
    await Deno.writeTextFile(`${root}/d/e/f.txt`, "f");
    await Deno.writeTextFile(`${root}/b.txt`, "b");
    settler.note("d/a.txt", "closed");
    settler.note("d/e/f.txt", "closed");
    settler.note("b.txt", "closed");
    await waitFor("the reports", () => reports.length === 3);
    assert.deepEqual(settler.known().sort(), ["b.txt", "d/a.txt", "d/e/f.txt"]);
    settler.dropTree("b"); // a prefix of "b.txt", not its directory
    settler.dropTree("d/e");
    assert.deepEqual(settler.known().sort(), ["b.txt", "d/a.txt"]);
    settler.dropTree("d");
    assert.deepEqual(settler.known(), ["b.txt"]);
    settler.verify("b.txt");
    assert.deepEqual(settler.known(), ["b.txt"]);
    await Deno.remove(`${root}/b.txt`);
    settler.verify("b.txt");
    assert.deepEqual(settler.known(), []);
  });
});

Deno.test("Settler.close() cancels pending files", async () => {
  await withSettler({ settleMs: 50, quietMs: 60_000 }, async (root, settler, reports) => {
    await Deno.writeTextFile(`${root}/c.txt`, "c");
    settler.note("c.txt", "closed");
    settler.close();
    assert.equal(settler.pending, 0);
    settler.note("c.txt", "closed");
    await sleep(100);
    assert.equal(reports.length, 0);
  });
});
