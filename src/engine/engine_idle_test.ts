/**
 * When `once` may end: the engine is idle once nothing can move any more,
 * also when a file vanished after some vessels got it, or cannot be moved
 * to processed/.
 */
import assert from "node:assert/strict";
import type { Config } from "../config/types.ts";
import { Store } from "../store/store.ts";
import { LocalTransport } from "../../transports/local.ts";
import { gatedTransport, localVessel, until } from "../../tests/helpers.ts";
import { Engine } from "./engine.ts";

/** An engine over local vessels `a` and `b` (b refused while `b.down`), with f.bin queued. */
async function withEngine(
  body: (shore: { dir: string; store: Store; engine: Engine; b: { down: boolean } }) => Promise<
    void
  >,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-idle-" });
  const store = await Store.open(`${dir}/state/cm.db`);
  const b = { down: true };
  let engine: Engine | undefined;
  try {
    await Deno.mkdir(`${dir}/outbox`);
    const vessels = ["a", "b"].map((name) => localVessel(name, `${dir}/vessel-${name}`));
    for (const name of ["a", "b"]) await Deno.mkdir(`${dir}/vessel-${name}`);
    const config: Config = {
      path: `${dir}/settings.ini`,
      monster: { chunkSize: 1024, database: `${dir}/state/cm.db` },
      directories: [{ name: "outbox", location: `${dir}/outbox`, destination: "/inbox" }],
      vessels,
      warnings: [],
    };
    await Deno.writeTextFile(`${dir}/outbox/f.bin`, "report");
    const { mtime, size } = await Deno.stat(`${dir}/outbox/f.bin`);
    engine = new Engine(
      config,
      store,
      [new LocalTransport(vessels[0]), gatedTransport(new LocalTransport(vessels[1]), b)],
      { retryFailed: false, backoff: { baseMs: 20, capMs: 50 } },
    );
    await engine.start();
    engine.enqueue({ directory: "outbox", relpath: "f.bin", size, mtimeMs: mtime!.getTime() });
    await body({ dir, store, engine, b });
  } finally {
    await engine?.stop();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Engine is idle once a file that vanished after one vessel got it is forgotten", async () => {
  await withEngine(async ({ dir, store, engine, b }) => {
    await until(() => store.doneFiles().length + store.deliveredVessels(1).length > 0, "a's copy");
    await Deno.remove(`${dir}/outbox/f.bin`);
    b.down = false;
    await until(() => engine.idle(), "idle");
    assert.equal(store.file(1), undefined, "forgotten");
    assert.equal(engine.unmovable(), 0);
  });
});

Deno.test("Engine is idle when a delivered file cannot be moved to processed/, and counts it", async () => {
  await withEngine(async ({ dir, store, engine, b }) => {
    await Deno.writeTextFile(`${dir}/outbox/processed`, "a file, not a directory");
    b.down = false;
    await until(() => engine.idle(), "idle");
    assert.equal(engine.unmovable(), 1);
    assert.deepEqual(store.doneFiles().map((file) => file.relpath), ["f.bin"]);
  });
});
