import assert from "node:assert/strict";
import { Store } from "../store/store.ts";
import { finalizeFile, numberedName } from "./finalizer.ts";
import { toSourceStat, UnsafeSourceError } from "./source.ts";

async function withLocation(
  body: (dir: string, location: string, finalize: (relpath: string) => Promise<string>) => Promise<
    void
  >,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-finalize-" });
  const store = await Store.open(`${dir}/state.db`);
  const location = `${dir}/out`;
  await Deno.mkdir(location);
  const directory = { name: "out", location, destination: "/srv/in" };
  const finalize = async (relpath: string) => {
    const stat = toSourceStat(await Deno.lstat(`${location}/${relpath}`));
    const { fileId } = store.enqueue("out", relpath, stat.size, stat.mtimeMs, [], stat);
    return await finalizeFile(store, directory, store.file(fileId)!);
  };
  try {
    await body(dir, location, finalize);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("finalizeFile() never replaces a file in processed/: the newcomer gets a numbered name", async () => {
  await withLocation(async (_, location, finalize) => {
    for (const version of ["first", "second", "third"]) {
      await Deno.mkdir(`${location}/sub`, { recursive: true });
      await Deno.writeTextFile(`${location}/sub/report.csv`, version);
      assert.equal(await finalize("sub/report.csv"), "processed");
    }
    const processed = `${location}/processed/sub`;
    assert.equal(await Deno.readTextFile(`${processed}/report.csv`), "first");
    assert.equal(await Deno.readTextFile(`${processed}/report.1.csv`), "second");
    assert.equal(await Deno.readTextFile(`${processed}/report.2.csv`), "third");
    await assert.rejects(() => Deno.lstat(`${location}/sub/report.csv`), Deno.errors.NotFound);
  });
});

Deno.test("finalizeFile() completes a move that died between link and unlink", async () => {
  await withLocation(async (_, location, finalize) => {
    await Deno.writeTextFile(`${location}/f.txt`, "once");
    await Deno.mkdir(`${location}/processed`);
    await Deno.link(`${location}/f.txt`, `${location}/processed/f.txt`);
    assert.equal(await finalize("f.txt"), "processed");
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(`${location}/processed`))).map((e) => e.name),
      ["f.txt"],
    );
    await assert.rejects(() => Deno.lstat(`${location}/f.txt`), Deno.errors.NotFound);
  });
});

Deno.test("finalizeFile() moves nothing through a symlinked processed/ or subdirectory", async () => {
  await withLocation(async (dir, location, finalize) => {
    await Deno.mkdir(`${dir}/victim`);
    await Deno.writeTextFile(`${location}/authorized_keys`, "ssh-ed25519 AAAA attacker");
    await Deno.symlink(`${dir}/victim`, `${location}/processed`);
    await assert.rejects(() => finalize("authorized_keys"), UnsafeSourceError);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/victim`)), []);
    assert.ok((await Deno.lstat(`${location}/authorized_keys`)).isFile);
    await Deno.remove(`${location}/processed`);

    await Deno.mkdir(`${location}/processed/sub`, { recursive: true });
    await Deno.remove(`${location}/processed/sub`);
    await Deno.symlink(`${dir}/victim`, `${location}/processed/sub`);
    await Deno.mkdir(`${location}/sub`);
    await Deno.writeTextFile(`${location}/sub/f`, "x");
    await assert.rejects(() => finalize("sub/f"), /processed\/sub" is a symbolic link/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/victim`)), []);
  });
});

Deno.test("finalizeFile() refuses a queued file whose subdirectory became a symlink", async () => {
  await withLocation(async (dir, location, finalize) => {
    await Deno.mkdir(`${location}/sub`);
    await Deno.writeTextFile(`${location}/sub/f`, "queued");
    await Deno.mkdir(`${dir}/other`);
    await Deno.writeTextFile(`${dir}/other/f`, "other!");
    await Deno.rename(`${location}/sub`, `${location}/sub.old`);
    await Deno.symlink(`${dir}/other`, `${location}/sub`);
    await assert.rejects(() => finalize("sub/f"), UnsafeSourceError);
    assert.equal(await Deno.readTextFile(`${dir}/other/f`), "other!");
  });
});

Deno.test("numberedName() keeps the extension", () => {
  assert.equal(numberedName("report.csv", 1), "report.1.csv");
  assert.equal(numberedName("archive.tar.gz", 2), "archive.2.tar.gz");
  assert.equal(numberedName("README", 3), "README.3");
  assert.equal(numberedName("a.b.c.txt", 1), "a.b.c.1.txt");
});
