import assert from "node:assert/strict";
import { isIgnoredPath, scanDirectory } from "./scan.ts";

async function withTree(fn: (root: string, outside: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "scan_test_" });
  const outside = await Deno.makeTempDir({ prefix: "scan_test_outside_" });
  try {
    await fn(root, outside);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
}

Deno.test("scanDirectory() lists nested regular files with relative paths, sizes and mtimes", async () => {
  await withTree(async (root) => {
    await Deno.mkdir(`${root}/a/b`, { recursive: true });
    await Deno.writeTextFile(`${root}/top.txt`, "12345");
    await Deno.writeTextFile(`${root}/a/b/c.txt`, "xy");
    await Deno.writeFile(`${root}/a/empty`, new Uint8Array());
    const old = new Date("2020-01-02T03:04:05Z");
    await Deno.utime(`${root}/a/b/c.txt`, old, old);

    const files = await scanDirectory(root);
    const byPath = new Map(files.map((file) => [file.relpath, file]));
    assert.deepEqual([...byPath.keys()].sort(), ["a/b/c.txt", "a/empty", "top.txt"]);
    assert.equal(byPath.get("top.txt")?.size, 5);
    assert.equal(byPath.get("a/empty")?.size, 0);
    assert.equal(byPath.get("a/b/c.txt")?.mtimeMs, old.getTime());
  });
});

Deno.test("scanDirectory() skips dot names, the top-level processed/ and symlinks", async () => {
  await withTree(async (root, outside) => {
    await Deno.mkdir(`${root}/processed/x`, { recursive: true });
    await Deno.mkdir(`${root}/.hidden`, { recursive: true });
    await Deno.mkdir(`${root}/sub/processed`, { recursive: true });
    await Deno.writeTextFile(`${root}/processed/done.txt`, "d");
    await Deno.writeTextFile(`${root}/processed/x/deep.txt`, "d");
    await Deno.writeTextFile(`${root}/.hidden/inside.txt`, "h");
    await Deno.writeTextFile(`${root}/.writer.tmp`, "t");
    await Deno.writeTextFile(`${root}/sub/.contentmonster-key.tmp`, "t");
    await Deno.writeTextFile(`${root}/sub/processed/kept.txt`, "k");
    await Deno.writeTextFile(`${outside}/target.txt`, "target");
    await Deno.mkdir(`${outside}/dir`);
    await Deno.writeTextFile(`${outside}/dir/f.txt`, "f");
    await Deno.symlink(`${outside}/target.txt`, `${root}/link.txt`);
    await Deno.symlink(`${outside}/dir`, `${root}/linkdir`);
    await Deno.writeTextFile(`${root}/real.txt`, "r");

    const relpaths = (await scanDirectory(root)).map((file) => file.relpath).sort();
    assert.deepEqual(relpaths, ["real.txt", "sub/processed/kept.txt"]);
  });
});

Deno.test("scanDirectory() keeps hostile names intact", async () => {
  await withTree(async (root) => {
    const names = ["with space.txt", "new\nline.txt", "日本語 ä.txt", "-dash", "$x`y'\"z"];
    await Deno.mkdir(`${root}/dïr ectory`);
    for (const name of names) await Deno.writeTextFile(`${root}/dïr ectory/${name}`, name);
    const files = await scanDirectory(root);
    assert.deepEqual(
      files.map((file) => file.relpath).sort(),
      names.map((name) => `dïr ectory/${name}`).sort(),
    );
    for (const file of files) {
      assert.equal(file.size, new TextEncoder().encode(file.relpath.split("/")[1]).length);
    }
  });
});

Deno.test("scanDirectory() reports a name that is not UTF-8 though a valid name decodes alike", async () => {
  await withTree(async (root) => {
    // "rep\xFFort.csv" reaches JavaScript as "rep\uFFFDort.csv", which names the other file.
    await Deno.writeTextFile(`${root}/rep\uFFFDort.csv`, "valid");
    const made = await new Deno.Command("/bin/sh", {
      args: ["-c", `printf latin1 > "$(printf '%s/rep\\377ort.csv' "$1")"`, "sh", root],
    }).output();
    assert.equal(made.code, 0);
    assert.equal((await Array.fromAsync(Deno.readDir(root))).length, 2);
    const unaddressable: string[] = [];
    const files = await scanDirectory(root, "", unaddressable);
    assert.deepEqual(files.map((file) => [file.relpath, file.size]), [["rep\uFFFDort.csv", 5]]);
    assert.deepEqual(unaddressable, ["rep\uFFFDort.csv"]);
  });
});

Deno.test("scanDirectory() with `under` scans one subtree, relative to the location", async () => {
  await withTree(async (root) => {
    await Deno.mkdir(`${root}/a/b`, { recursive: true });
    await Deno.mkdir(`${root}/other`);
    await Deno.writeTextFile(`${root}/a/b/c.txt`, "c");
    await Deno.writeTextFile(`${root}/other/o.txt`, "o");
    const files = await scanDirectory(root, "a");
    assert.deepEqual(files.map((file) => file.relpath), ["a/b/c.txt"]);
  });
});

Deno.test("scanDirectory() throws naming the directory it cannot read", async () => {
  await withTree(async (root) => {
    await assert.rejects(
      () => scanDirectory(`${root}/missing`),
      (error: Error) => {
        assert.ok(error instanceof Error);
        assert.match(error.message, /^Cannot scan directory ".*\/missing": /);
        assert.ok(error.cause instanceof Deno.errors.NotFound);
        return true;
      },
    );
  });
});

Deno.test("isIgnoredPath() ignores dot names at any depth and only the top-level processed/", () => {
  assert.equal(isIgnoredPath("a.txt"), false);
  assert.equal(isIgnoredPath("a/b/c.txt"), false);
  assert.equal(isIgnoredPath("a/processed/c.txt"), false);
  assert.equal(isIgnoredPath("processed"), true);
  assert.equal(isIgnoredPath("processed/a.txt"), true);
  assert.equal(isIgnoredPath(".a.txt"), true);
  assert.equal(isIgnoredPath("a/.b/c.txt"), true);
  assert.equal(isIgnoredPath("a/.contentmonster-x.tmp"), true);
});
