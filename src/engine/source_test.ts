import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  hashSource,
  openPart,
  partCount,
  partSizeFor,
  readPart,
  sameVersion,
  SourceChangedError,
  statSource,
  toSourceStat,
  UnsafeSourceError,
} from "./source.ts";

/** The version of the file at `path` now. */
async function statOf(path: string) {
  return toSourceStat(await Deno.lstat(path));
}

/** Deterministic bytes that differ at every offset of a part. */
function bytes(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
}

async function withDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-source-" });
  try {
    await work(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

Deno.test("partSizeFor() spreads a file over the connections, between 256 KiB and ChunkSize", () => {
  const MiB = 1 << 20;
  const chunk = 10 * MiB;
  // Large files keep the operator's ChunkSize.
  assert.equal(partSizeFor(1024 * MiB, chunk, 16), chunk);
  // Two parts per connection at the cap: 16 MiB over 16 connections is 32 parts of 512 KiB.
  assert.equal(partSizeFor(16 * MiB, chunk, 16), 512 << 10);
  assert.equal(partSizeFor(64 * MiB, chunk, 16), 2 * MiB);
  // Down to 256 KiB: 8 MiB is 32 parts, two per connection at the cap.
  assert.equal(partSizeFor(8 * MiB, chunk, 16), 256 << 10);
  assert.equal(partSizeFor(600 << 10, chunk, 16), 256 << 10);
  // A file of up to 512 KiB stays one part.
  assert.equal(partSizeFor(300 << 10, chunk, 16), 512 << 10);
  assert.equal(partCount(300 << 10, partSizeFor(300 << 10, chunk, 16)), 1);
  assert.equal(partCount(512 << 10, partSizeFor(512 << 10, chunk, 16)), 1);
  // Whole multiples of 64 KiB, never above ChunkSize.
  assert.equal(partSizeFor(50 * MiB + 1, chunk, 16) % (64 << 10), 0);
  assert.equal(partSizeFor(16 * MiB, 100 << 10, 16), 100 << 10);
  // One connection gains nothing from smaller parts.
  assert.equal(partSizeFor(16 * MiB, chunk, 1), chunk);
});

Deno.test("partCount() gives an empty file one part and splits exact multiples exactly", () => {
  assert.equal(partCount(0, 10), 1);
  assert.equal(partCount(1, 10), 1);
  assert.equal(partCount(9, 10), 1);
  assert.equal(partCount(10, 10), 1);
  assert.equal(partCount(11, 10), 2);
  assert.equal(partCount(20, 10), 2);
  assert.equal(partCount(21, 10), 3);
  assert.equal(partCount(4 * 2 ** 30, 10485760), 410);
  assert.equal(partCount(4 * 2 ** 30, 2 ** 20), 4096);
  assert.equal(partCount(4 * 2 ** 30 + 1, 2 ** 20), 4097);
});

Deno.test("readPart() reads each part, the short last one included", async () => {
  await withDir(async (dir) => {
    const data = bytes(25);
    const path = `${dir}/file.bin`;
    await Deno.writeFile(path, data);
    const parts = [];
    for (let index = 0; index < partCount(data.length, 10); index++) {
      parts.push(await readPart(path, index, 10, await statOf(path)));
    }
    assert.deepEqual(parts, [data.slice(0, 10), data.slice(10, 20), data.slice(20, 25)]);
  });
});

Deno.test("openPart() reads its part's bytes at any offset, in turn or not, from one descriptor", async () => {
  await withDir(async (dir) => {
    const data = bytes(100);
    const path = `${dir}/file.bin`;
    await Deno.writeFile(path, data);
    using part = openPart(path, 1, 40, await statOf(path));
    assert.equal(part.byteLength, 40);
    // Overlapping calls, out of order: each gets its own bytes.
    const reads = [30, 0, 10, 20].map((offset) => part.read(offset, new Uint8Array(10)));
    const got = await Promise.all(reads);
    assert.deepEqual(got, [30, 0, 10, 20].map((o) => data.slice(40 + o, 50 + o)));
    assert.throws(() => part.read(35, new Uint8Array(10)), RangeError);
    assert.equal(part.failure, undefined);
  });
});

Deno.test("openPart() of a file that shrank while sent fails the read and keeps the reason", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/file.bin`;
    await Deno.writeFile(path, bytes(100));
    using part = openPart(path, 1, 60, await statOf(path));
    assert.deepEqual(await part.read(0, new Uint8Array(10)), bytes(100).slice(60, 70));
    await Deno.truncate(path, 65);
    await assert.rejects(() => part.read(10, new Uint8Array(10)), SourceChangedError);
    assert.ok(part.failure instanceof SourceChangedError);
  });
});

Deno.test("readPart() reads exact multiples, an empty file and parts bigger than one read", async () => {
  await withDir(async (dir) => {
    const exact = `${dir}/exact`;
    const data = bytes(30);
    await Deno.writeFile(exact, data);
    assert.deepEqual(await readPart(exact, 2, 10, await statOf(exact)), data.slice(20, 30));

    const empty = `${dir}/empty`;
    await Deno.writeFile(empty, new Uint8Array(0));
    assert.deepEqual(await readPart(empty, 0, 10, await statOf(empty)), new Uint8Array(0));

    const large = `${dir}/large`;
    const big = bytes(3 * 2 ** 20 + 123);
    await Deno.writeFile(large, big);
    const chunk = 2 * 2 ** 20;
    const first = await readPart(large, 0, chunk, await statOf(large));
    const last = await readPart(large, 1, chunk, await statOf(large));
    assert.equal(first.length, chunk);
    assert.equal(last.length, big.length - chunk);
    assert.equal(sha256(first), sha256(big.subarray(0, chunk)));
    assert.equal(sha256(last), sha256(big.subarray(chunk)));
  });
});

Deno.test("readPart() of a vanished file throws SourceChangedError", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/gone.bin`;
    await assert.rejects(
      () => readPart(path, 0, 10, { size: 25, mtimeMs: 0 }),
      (error: unknown) => {
        assert.ok(error instanceof SourceChangedError);
        assert.equal(error.name, "SourceChangedError");
        assert.equal(error.message, `Source "${path}" vanished`);
        return true;
      },
    );
  });
});

Deno.test("readPart() of a file that shrank throws SourceChangedError with the new size", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/shrunk.bin`;
    await Deno.writeFile(path, bytes(15));
    const expected = { ...await statOf(path), size: 25 };
    await assert.rejects(
      () => readPart(path, 1, 10, expected),
      (error: unknown) => {
        assert.ok(error instanceof SourceChangedError);
        assert.equal(error.message, `Source "${path}" changed while it was read (now 15 bytes)`);
        return true;
      },
    );
  });
});

Deno.test("hashSource() equals node:crypto's sha256 of the file", async () => {
  await withDir(async (dir) => {
    for (const length of [0, 1, 2 ** 20, 2 ** 20 + 1, 2.5 * 2 ** 20]) {
      const data = bytes(length);
      const path = `${dir}/f${length}`;
      await Deno.writeFile(path, data);
      const stat = statSource(dir, `f${length}`);
      assert.ok(stat);
      assert.equal(stat.size, length);
      assert.equal(await hashSource(path, stat), sha256(data), `${length} bytes`);
    }
    assert.equal(
      await hashSource(`${dir}/f0`, statSource(dir, "f0")!),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
  });
});

Deno.test("hashSource() throws SourceChangedError when the file is not the expected version", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/f.bin`;
    await Deno.writeFile(path, bytes(100));
    const stat = statSource(dir, "f.bin")!;
    for (const expected of [{ ...stat, size: 99 }, { ...stat, mtimeMs: stat.mtimeMs - 1000 }]) {
      await assert.rejects(
        () => hashSource(path, expected),
        (error: unknown) => {
          assert.ok(error instanceof SourceChangedError);
          assert.equal(error.message, `Source "${path}" changed while it was read (now 100 bytes)`);
          return true;
        },
      );
    }
    await Deno.remove(path);
    await assert.rejects(() => hashSource(path, stat), SourceChangedError, "vanished");
  });
});

Deno.test("statSource() sees regular files only, with their identity and mode", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(`${dir}/f`, bytes(3));
    const mtime = new Date(1_700_000_000_000);
    await Deno.utime(`${dir}/f`, mtime, mtime);
    await Deno.chmod(`${dir}/f`, 0o640);
    const info = await Deno.lstat(`${dir}/f`);
    assert.deepEqual(statSource(dir, "f"), {
      size: 3,
      mtimeMs: mtime.getTime(),
      dev: info.dev,
      ino: info.ino,
      ctimeMs: info.ctime!.getTime(),
      mode: 0o640,
    });
    await Deno.mkdir(`${dir}/d`);
    assert.equal(statSource(dir, "d"), undefined);
    await Deno.symlink(`${dir}/f`, `${dir}/link`);
    assert.equal(statSource(dir, "link"), undefined, "a symlink is not followed");
    assert.equal(statSource(dir, "missing"), undefined);
    assert.equal(statSource(dir, "missing/below"), undefined);
    assert.equal(statSource(dir, "f/below"), undefined);
  });
});

Deno.test("statSource() refuses a path through a symbolic link inside the location", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/location/sub`, { recursive: true });
    await Deno.mkdir(`${dir}/elsewhere`);
    await Deno.writeFile(`${dir}/elsewhere/f`, bytes(3));
    await Deno.writeFile(`${dir}/location/sub/f`, bytes(3));
    assert.ok(statSource(`${dir}/location`, "sub/f"));
    await Deno.remove(`${dir}/location/sub`, { recursive: true });
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/location/sub`);
    assert.throws(
      () => statSource(`${dir}/location`, "sub/f"),
      UnsafeSourceError,
      `"${dir}/location/sub" is a symbolic link inside the directory's Location`,
    );
    // A link above the location (/srv -> /data/srv) is the operator's choice and is fine.
    await Deno.symlink(`${dir}/elsewhere`, `${dir}/alias`);
    assert.ok(statSource(`${dir}/alias`, "f"));
  });
});

Deno.test("readPart() and hashSource() refuse to read another file than the queued one", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(`${dir}/f`, bytes(30));
    const queued = await statOf(`${dir}/f`);
    // Same size and mtime, another inode (cp -p, tar x, rsync -a, a swapped directory).
    await Deno.writeFile(`${dir}/g`, bytes(30).reverse());
    await Deno.utime(`${dir}/g`, queued.mtimeMs / 1000, queued.mtimeMs / 1000);
    await Deno.rename(`${dir}/g`, `${dir}/f`);
    await assert.rejects(() => readPart(`${dir}/f`, 0, 10, queued), SourceChangedError);
    await assert.rejects(() => hashSource(`${dir}/f`, queued), SourceChangedError);
    assert.equal(sameVersion(await statOf(`${dir}/f`), queued), false);
  });
});

Deno.test("sameVersion() needs equal size and mtime, and equal device, inode and ctime where known", () => {
  const a = { size: 10, mtimeMs: 1000 };
  assert.equal(sameVersion(a, { size: 10, mtimeMs: 1000 }), true);
  assert.equal(sameVersion(a, { size: 11, mtimeMs: 1000 }), false);
  assert.equal(sameVersion(a, { size: 10, mtimeMs: 1001 }), false);
  assert.equal(sameVersion(a, undefined), false);
  assert.equal(sameVersion(undefined, a), false);
  assert.equal(sameVersion(undefined, undefined), false);
  const full = { ...a, dev: 1, ino: 2, ctimeMs: 3 };
  assert.equal(sameVersion(full, a), true, "unknown identity (rows queued before) matches");
  assert.equal(sameVersion(full, { ...full }), true);
  assert.equal(sameVersion(full, { ...full, ino: 4 }), false);
  assert.equal(sameVersion(full, { ...full, dev: 4 }), false);
  assert.equal(sameVersion(full, { ...full, ctimeMs: 4 }), false);
  assert.equal(sameVersion({ ...full, version: 3 } as typeof a, full), true);
});
