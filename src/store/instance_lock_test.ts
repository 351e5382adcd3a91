import assert from "node:assert/strict";
import { DatabaseLockedError, InstanceLock, lockPathFor } from "./instance_lock.ts";
import { Store } from "./store.ts";

async function withDir(work: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-lock-" });
  try {
    await work(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Store.open({ exclusive }) refuses a second holder at once, naming the database and PID", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/cm.db`;
    const first = await Store.open(path, { exclusive: true });
    try {
      const started = Date.now();
      await assert.rejects(
        () => Store.open(path, { exclusive: true }),
        (error: unknown) => {
          assert.ok(error instanceof DatabaseLockedError);
          assert.equal(error.holderPid, Deno.pid);
          assert.match(error.message, new RegExp(`"${path}"`));
          assert.match(error.message, new RegExp(`process ${Deno.pid} `));
          return true;
        },
      );
      assert.ok(Date.now() - started < 1000, "the second open waited for the lock");
      // status and check open without the lock, beside the holder.
      const reader = await Store.open(path);
      assert.equal(reader.instanceId, first.instanceId);
      reader.close();
    } finally {
      first.close();
    }
    const again = await Store.open(path, { exclusive: true });
    again.close();
  });
});

Deno.test("InstanceLock is released when its holder dies by SIGKILL", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/cm.db`;
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const { InstanceLock } = await import(${
          JSON.stringify(import.meta.resolve("./instance_lock.ts"))
        });
         await InstanceLock.acquire(${JSON.stringify(path)});
         console.log("locked");
         setInterval(() => {}, 1000);`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = holder.stdout.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /locked/);
    await assert.rejects(() => InstanceLock.acquire(path), (error: unknown) => {
      assert.ok(error instanceof DatabaseLockedError);
      assert.equal(error.holderPid, holder.pid);
      return true;
    });
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    await holder.stdout.cancel();
    assert.ok((await Deno.lstat(lockPathFor(path))).isFile);
    (await InstanceLock.acquire(path)).release();
  });
});

Deno.test("Store.open() by several processes at once on a new database all succeed", async () => {
  await withDir(async (dir) => {
    const store = JSON.stringify(import.meta.resolve("./store.ts"));
    for (let round = 0; round < 3; round++) {
      const path = JSON.stringify(`${dir}/new-${round}.db`);
      const children = Array.from({ length: 6 }, () =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "eval",
            `const { Store } = await import(${store});
             const s = await Store.open(${path}); console.log(s.instanceId); s.close();`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output());
      const results = await Promise.all(children);
      const decoder = new TextDecoder();
      for (const result of results) {
        assert.equal(result.code, 0, decoder.decode(result.stderr));
      }
      const ids = new Set(results.map((r) => decoder.decode(r.stdout).trim()));
      assert.equal(ids.size, 1, `one instance id per database, not ${[...ids]}`);
    }
  });
});
