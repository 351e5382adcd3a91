import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  hashSource,
  partCount,
  readPart,
  sameVersion,
  SourceChangedError,
  statSource,
} from "./source.ts";

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
      parts.push(await readPart(path, index, 10, data.length));
    }
    assert.deepEqual(parts, [data.slice(0, 10), data.slice(10, 20), data.slice(20, 25)]);
  });
});

Deno.test("readPart() reads exact multiples, an empty file and parts bigger than one read", async () => {
  await withDir(async (dir) => {
    const exact = `${dir}/exact`;
    const data = bytes(30);
    await Deno.writeFile(exact, data);
    assert.deepEqual(await readPart(exact, 2, 10, 30), data.slice(20, 30));

    const empty = `${dir}/empty`;
    await Deno.writeFile(empty, new Uint8Array(0));
    assert.deepEqual(await readPart(empty, 0, 10, 0), new Uint8Array(0));

    const large = `${dir}/large`;
    const big = bytes(3 * 2 ** 20 + 123);
    await Deno.writeFile(large, big);
    const chunk = 2 * 2 ** 20;
    const first = await readPart(large, 0, chunk, big.length);
    const last = await readPart(large, 1, chunk, big.length);
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
      () => readPart(path, 0, 10, 25),
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
    await assert.rejects(
      () => readPart(path, 1, 10, 25),
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
      const stat = await statSource(path);
      assert.ok(stat);
      assert.equal(stat.size, length);
      assert.equal(await hashSource(path, stat), sha256(data), `${length} bytes`);
    }
    assert.equal(
      await hashSource(`${dir}/f0`, (await statSource(`${dir}/f0`))!),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    );
  });
});

Deno.test("hashSource() throws SourceChangedError when the file is not the expected version", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/f.bin`;
    await Deno.writeFile(path, bytes(100));
    const stat = (await statSource(path))!;
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

Deno.test("statSource() sees regular files only", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(`${dir}/f`, bytes(3));
    const mtime = new Date(1_700_000_000_000);
    await Deno.utime(`${dir}/f`, mtime, mtime);
    await Deno.chmod(`${dir}/f`, 0o640);
    assert.deepEqual(await statSource(`${dir}/f`), {
      size: 3,
      mtimeMs: mtime.getTime(),
      mode: 0o640,
    });
    await Deno.mkdir(`${dir}/d`);
    assert.equal(await statSource(`${dir}/d`), undefined);
    await Deno.symlink(`${dir}/f`, `${dir}/link`);
    assert.equal(await statSource(`${dir}/link`), undefined, "a symlink is not followed");
    assert.equal(await statSource(`${dir}/missing`), undefined);
  });
});

Deno.test("sameVersion() needs both stats with equal size and mtime", () => {
  const a = { size: 10, mtimeMs: 1000 };
  assert.equal(sameVersion(a, { size: 10, mtimeMs: 1000 }), true);
  assert.equal(sameVersion(a, { size: 11, mtimeMs: 1000 }), false);
  assert.equal(sameVersion(a, { size: 10, mtimeMs: 1001 }), false);
  assert.equal(sameVersion(a, undefined), false);
  assert.equal(sameVersion(undefined, a), false);
  assert.equal(sameVersion(undefined, undefined), false);
  // A FileRecord carries more fields; only size and mtime count.
  assert.equal(sameVersion({ ...a, version: 3 } as typeof a, a), true);
});
