/**
 * Wires config, store, transports, engine and watcher together for `run` and
 * `once`, and takes them apart again in the right order.
 */
import type { Config } from "../config/types.ts";
import { Engine } from "../engine/engine.ts";
import { logger } from "../log/logger.ts";
import { Store } from "../store/store.ts";
import { Watcher } from "../watch/watcher.ts";
import { openTransport } from "../../transports/mod.ts";

/** A running replicator. */
export interface Replicator {
  readonly engine: Engine;
  readonly watcher: Watcher;
  readonly store: Store;
  stop(): Promise<void>;
}

/** Starts replicating `config`'s directories to its vessels. */
export async function startReplicator(
  config: Config,
  options: { once: boolean },
): Promise<Replicator> {
  const log = logger("");
  const store = await Store.open(config.monster.database, { exclusive: true });
  const transports = await Promise.all(
    config.vessels.map((vessel) => openTransport(vessel, logger(`vessel ${vessel.name}`))),
  );
  if (!options.once) {
    const retried = store.retryFailed();
    if (retried > 0) log.info(`retrying ${retried} deliveries that had failed`);
  }
  const engine = new Engine(config, store, transports, {
    retryFailed: !options.once,
    onProcessed: (directory, relpath) => watcher.forget(directory, relpath),
  });
  const watcher = new Watcher(config.directories, (file) => engine.enqueue(file), {
    trustExisting: options.once,
  });
  await engine.start();
  await watcher.start();
  log.info(
    `replicating ${config.directories.length} directories to ${config.vessels.length} vessels`,
  );
  return {
    engine,
    watcher,
    store,
    async stop() {
      await watcher.stop();
      await engine.stop();
      store.close();
    },
  };
}
