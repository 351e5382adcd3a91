import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { HashBatcher } from "./hash_batch.ts";
import { batchHashCommand, type HashGroup, parseBatchHashes } from "./commands.ts";
import { runShell } from "../../tests/cli_harness.ts";
import type { SshConnection } from "./connection.ts";

/** Hashes each batch with one command run by the shell, as the vessel would, and records it. */
function shellRunner(commands: string[]) {
  return async (groups: readonly HashGroup[]) => {
    const command = batchHashCommand(groups);
    commands.push(command);
    const result = await runShell(command);
    return { hashes: parseBatchHashes(result.stdout), detail: `exit ${result.code}` };
  };
}

Deno.test("HashBatcher hashes files asked for together with one command", async () => {
  const root = await Deno.makeTempDir();
  try {
    const commands: string[] = [];
    const batcher = new HashBatcher(shellRunner(commands));
    const names = [".contentmonster-a-1.tmp", ".contentmonster-a-2.tmp"];
    for (const name of names) await Deno.writeTextFile(`${root}/${name}`, name);
    const hashes = await Promise.all(names.map((name) => batcher.hash(`${root}/${name}`, 22)));
    assert.equal(commands.length, 1);
    for (const [index, name] of names.entries()) {
      const expected = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(name));
      assert.equal(hashes[index], Buffer.from(expected).toString("hex"));
    }
    await assert.rejects(batcher.hash(`${root}/.contentmonster-a-3.tmp`, 1), /no sha256/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("HashBatcher keeps each command far below the kernel's limit on one argument", async () => {
  // Paths near PATH_MAX (4096): 200 of them in one command would pass 128 KiB.
  const root = await Deno.makeTempDir();
  try {
    const dirs = Array.from({ length: 6 }, (_, i) => `${root}/${String(i).repeat(200)}`);
    const paths: string[] = [];
    for (const dir of dirs) {
      let deep = dir;
      for (let level = 0; level < 17; level++) deep += `/${"d".repeat(200)}`;
      await Deno.mkdir(deep, { recursive: true });
      paths.push(`${deep}/.contentmonster-b-1.tmp`);
      await Deno.writeTextFile(paths.at(-1)!, "x");
    }
    const commands: string[] = [];
    const batcher = new HashBatcher(shellRunner(commands));
    const hashes = await Promise.all(paths.map((path) => batcher.hash(path, 1)));
    assert.equal(new Set(hashes).size, 1, "every file hashed");
    assert.ok(commands.length >= 2, `${commands.length} command(s)`);
    for (const command of commands) assert.ok(command.length < 64 << 10, `${command.length}`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("HashBatcher hashes a batch on the connection that wrote it all, and one from several anywhere", async () => {
  const root = await Deno.makeTempDir();
  try {
    const asked: (string | undefined)[] = [];
    const run = shellRunner([]);
    const batcher = new HashBatcher((groups, _bytes, on) => {
      asked.push(on === undefined ? undefined : String(on));
      return run(groups);
    });
    // Stand-ins: the batcher only compares and hands on the connection a file was written on.
    const [first, second] = ["first", "second"].map((name) => name as unknown as SshConnection);
    const paths = [1, 2, 3].map((index) => `${root}/.contentmonster-c-${index}.tmp`);
    for (const path of paths) await Deno.writeTextFile(path, path);
    await Promise.all(paths.slice(0, 2).map((path) => batcher.hash(path, 1, first)));
    await Promise.all(paths.map((path, index) => batcher.hash(path, 1, index ? second : first)));
    assert.deepEqual(asked, ["first", undefined]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
