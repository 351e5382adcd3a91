/**
 * The engine's observer contract, in process: a vessel that refuses
 * connections backs off (recorded in the store for `status`), comes back,
 * and the delivery, its parts and the move to processed/ are reported.
 */
import assert from "node:assert/strict";
import type { Config } from "../config/types.ts";
import { Store } from "../store/store.ts";
import { LocalTransport } from "../../transports/local.ts";
import { gatedTransport, localVessel, until } from "../../tests/helpers.ts";
import { Engine } from "./engine.ts";
import type { DeliveryFailure, DeliveryReport, EngineObserver, VesselChange } from "./observer.ts";

/** The vessel operations refused while the vessel is down. */
const GATED = new Set(["prepare", "listParts", "putPart", "putWhole", "startAssembly"]);

Deno.test("Engine reports a vessel backing off, back again, the delivery and the move to processed/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cm-engine-" });
  const store = await Store.open(`${dir}/state/cm.db`);
  const state = { down: true };
  const failures: DeliveryFailure[] = [];
  const reports: DeliveryReport[] = [];
  const changes: VesselChange[] = [];
  const processed: [string, string, readonly string[]][] = [];
  let sent = 0;
  const observer: EngineObserver = {
    sent: (_vessel, _directory, bytes) => sent += bytes,
    failed: (failure) => failures.push(failure),
    delivered: (report) => reports.push(report),
    vesselChanged: (change) => changes.push(change),
    processed: (directory, relpath, vessels) => processed.push([directory, relpath, vessels]),
  };
  let engine: Engine | undefined;
  try {
    await Deno.mkdir(`${dir}/outbox`);
    await Deno.mkdir(`${dir}/vessel`);
    const vessel = localVessel("v", `${dir}/vessel`);
    const config: Config = {
      path: `${dir}/settings.ini`,
      monster: { chunkSize: 1024, database: `${dir}/state/cm.db` },
      directories: [{ name: "outbox", location: `${dir}/outbox`, destination: "/inbox" }],
      vessels: [vessel],
      warnings: [],
    };
    const data = new Uint8Array(4096 + 100).map((_, i) => i % 251);
    await Deno.writeFile(`${dir}/outbox/f.bin`, data);
    const { mtime } = await Deno.stat(`${dir}/outbox/f.bin`);
    engine = new Engine(config, store, [gatedTransport(new LocalTransport(vessel), state, GATED)], {
      retryFailed: true,
      backoff: { baseMs: 20, capMs: 100 },
      observer,
    });
    await engine.start();
    engine.enqueue({
      directory: "outbox",
      relpath: "f.bin",
      size: data.length,
      mtimeMs: mtime!.getTime(),
    });

    await until(() => changes.some((c) => c.after.state === "backing-off"), "backing off");
    const down = store.vesselHealth()[0];
    assert.equal(down.state, "backing-off", "status reads the state from the store");
    assert.match(down.lastError ?? "", /connection refused/);
    assert.ok(down.failingSince !== null && down.backoffUntil !== null);
    assert.equal(failures[0].code, "connection");
    assert.equal(failures[0].vesselWide, true);
    assert.equal(engine.activity()[0].health.state, "backing-off");

    state.down = false;
    await until(() => processed.length === 1, "the move to processed/");
    assert.deepEqual(processed, [["outbox", "f.bin", ["v"]]]);
    assert.equal(reports.length, 1);
    assert.deepEqual(
      { parts: reports[0].parts, resumed: reports[0].partsResumed, bytes: reports[0].bytesSent },
      { parts: 5, resumed: 0, bytes: data.length },
    );
    assert.equal(sent, data.length);
    const back = changes.find((c) =>
      c.before.state === "backing-off" && c.after.state === "connected"
    );
    assert.ok(back, JSON.stringify(changes.map((c) => c.after.state)));
    assert.equal(back.before.failingSince, down.failingSince);
    const up = store.vesselHealth()[0];
    assert.equal(up.state, "connected");
    assert.equal(up.lastError, null);
    assert.deepEqual(await Deno.readFile(`${dir}/vessel/inbox/f.bin`), data);
  } finally {
    await engine?.stop();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
