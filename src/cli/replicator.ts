/**
 * Wires config, store, transports, engine and watcher together for `run` and
 * `once`, and takes them apart again in the right order.
 */
import { formatConfigLocation } from "../config/errors.ts";
import type { Config } from "../config/types.ts";
import { Engine, type VesselActivity } from "../engine/engine.ts";
import { type EngineObserver, fanOut } from "../engine/observer.ts";
import { engineLog } from "../log/engine_log.ts";
import { errorMessage, logger } from "../log/logger.ts";
import { plural } from "../log/units.ts";
import { engineMetrics } from "../metrics/engine_metrics.ts";
import { type MetricsServer, serveMetrics } from "../metrics/server.ts";
import { Store } from "../store/store.ts";
import { Watcher } from "../watch/watcher.ts";
import type { Transport } from "../../transports/mod.ts";

/** A running replicator. */
export interface Replicator {
  readonly engine: Engine;
  readonly watcher: Watcher;
  readonly store: Store;
  stop(): Promise<void>;
}

/**
 * Starts replicating `config`'s directories to its vessels, over
 * `transports` (see transports_ahead.ts), which it closes if the start fails.
 */
export async function startReplicator(
  config: Config,
  options: { once: boolean; transports: Transport[] },
): Promise<Replicator> {
  try {
    return await start(config, options.once, options.transports);
  } catch (error) {
    await Promise.allSettled(options.transports.map((transport) => transport.close()));
    throw error;
  }
}

async function start(config: Config, once: boolean, transports: Transport[]): Promise<Replicator> {
  const log = logger("");
  const observers: EngineObserver[] = [engineLog()];
  // The engine comes later; until then a scrape shows no vessel activity.
  let activity: () => VesselActivity[] = () => [];
  let metricsServer: MetricsServer | undefined;
  const metrics = config.monster.metricsAddress && engineMetrics(config);
  if (metrics && config.monster.metricsAddress) {
    // Before the state database, so nothing is made for a start that fails here. Exit 1, not
    // a bad config's 2: a port still held by the instance before, or an address whose
    // interface is not up yet at boot, is there for systemd's restart a moment later.
    const { hostname, port, where } = config.monster.metricsAddress;
    try {
      metricsServer = serveMetrics(metrics.registry, hostname, port);
    } catch (error) {
      throw new Error(
        `${formatConfigLocation(where)}cannot serve metrics on ${hostname}:${port}: ` +
          errorMessage((error as Error).cause ?? error),
        { cause: error },
      );
    }
  }
  let store: Store;
  try {
    store = await Store.open(config.monster.database, { exclusive: true });
  } catch (error) {
    await metricsServer?.close();
    throw error;
  }
  if (metrics && metricsServer) {
    observers.push(metrics.observer);
    metrics.readFrom({
      activity: () => activity(),
      queue: () => store.queueStatus(),
    });
    const host = metricsServer.hostname.includes(":")
      ? `[${metricsServer.hostname}]`
      : metricsServer.hostname;
    log.info(`metrics at http://${host}:${metricsServer.port}/metrics`);
  }
  // `once` too: the operator may have fixed the cause since (within one `once`, a delivery
  // that fails for good stays failed, so that it ends).
  const retried = store.retryFailed();
  if (retried > 0) {
    log.info(`retrying ${plural(retried, "delivery", "deliveries")} that had failed`);
  }
  const engine = new Engine(config, store, transports, {
    retryFailed: !once,
    onProcessed: (directory, relpath) => watcher.forget(directory, relpath),
    observer: fanOut(...observers),
  });
  activity = () => engine.activity();
  const watcher = new Watcher(config.directories, (file) => engine.enqueue(file), {
    trustExisting: once,
    watch: !once,
    onUnaddressable: (directory, relpaths) => store.setUnaddressable(directory, relpaths),
  });
  await engine.start();
  await watcher.start();
  log.info(
    `replicating ${plural(config.directories.length, "directory", "directories")} to ${
      plural(config.vessels.length, "vessel")
    }`,
  );
  return {
    engine,
    watcher,
    store,
    async stop() {
      await metricsServer?.close();
      await watcher.stop();
      await engine.stop();
      store.close();
    },
  };
}
