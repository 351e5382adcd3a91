/**
 * The replication engine: turns ready files into deliveries, runs one worker
 * per vessel, and finalizes files once every vessel holds them.
 */
import type { Config, DirectoryConfig } from "../config/types.ts";
import { describeError, logger } from "../log/logger.ts";
import type { DeliveryRecord, FileRecord, Store, VesselHealthRecord } from "../store/store.ts";
import type { Transport } from "../../transports/transport.ts";
import type { BackoffPolicy } from "./backoff.ts";
import { deliveryKey, type DeliveryOutcome } from "./delivery.ts";
import { finalizeFile } from "./finalizer.ts";
import type { EngineObserver } from "./observer.ts";
import { hashSource } from "./source.ts";
import { VesselWorker } from "./vessel_worker.ts";

const log = logger("engine");

/** How long ready files gather before they are recorded together. */
const ARRIVALS_DELAY_MS = 5;
/** How old a leftover of a dropped delivery must be before it is removed. */
const LEFTOVER_AGE_MS = 24 * 3600_000;
/**
 * How old a leftover of another shore sharing the vessel's TempDir must be:
 * its queue is unknown here, and a shore whose link was down for days still
 * has parts there that it would otherwise send again.
 */
const OTHER_SHORES_LEFTOVER_AGE_MS = 30 * 24 * 3600_000;
/** How often the engine looks for a vessel idle enough to clean. */
const CLEANUP_CHECK_MS = 5_000;
/** Files recorded per commit: about 50 ms of work. */
const ARRIVALS_PER_COMMIT = 500;
/**
 * Files moved to processed/ at the same time: their store writes then share
 * one commit (one after the other, each small file waited for its own).
 */
const PARALLEL_FINALIZATIONS = 32;

/** A file the watcher found ready. */
export interface ReadyFileInfo {
  readonly directory: string;
  readonly relpath: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly dev?: number | null;
  readonly ino?: number | null;
  readonly ctimeMs?: number | null;
}

/** How the engine behaves. */
export interface EngineOptions {
  /** Retry permanently failed deliveries after a long back-off (daemon mode). */
  readonly retryFailed: boolean;
  readonly backoff?: BackoffPolicy;
  /** Called when a file moved to processed/ (the watcher forgets it). */
  readonly onProcessed?: (directory: string, relpath: string) => void;
  /** Hears deliveries, progress and vessel health (logs, metrics). */
  readonly observer?: EngineObserver;
}

/** One vessel as the engine sees it now, for metrics. */
export interface VesselActivity {
  readonly health: VesselHealthRecord;
  /** Deliveries running now. */
  readonly inFlight: number;
}

/** Replicates queued files to every vessel. */
export class Engine {
  readonly #config: Config;
  readonly #store: Store;
  readonly #transports: readonly Transport[];
  readonly #options: EngineOptions;
  readonly #directories: Map<string, DirectoryConfig>;
  readonly #workers: VesselWorker[];
  readonly #hashes = new Map<string, Promise<string>>();
  readonly #finalizing = new Set<number>();
  /**
   * Files every vessel holds that this run could not move to processed/ (the
   * error is logged; a later start tries again) or whose directory is no
   * longer configured: `once` ends without them, and says so.
   */
  readonly #unmovable = new Set<number>();
  readonly #abort = new AbortController();
  #running: Promise<unknown> | undefined;
  /** Vessels whose leftovers this run has removed (or is removing). */
  readonly #cleaned = new Set<string>();
  readonly #cleanups = new Set<Promise<void>>();
  #cleanupTimer: ReturnType<typeof setInterval> | undefined;
  /** Files waiting to move to processed/, and the moves running now. */
  readonly #toFinalize: FileRecord[] = [];
  readonly #finalizations = new Set<Promise<void>>();
  readonly #arrivals: ReadyFileInfo[] = [];
  #arrivalsFlush: ReturnType<typeof setTimeout> | undefined;

  constructor(
    config: Config,
    store: Store,
    transports: readonly Transport[],
    options: EngineOptions,
  ) {
    this.#config = config;
    this.#store = store;
    this.#transports = transports;
    this.#options = options;
    this.#directories = new Map(config.directories.map((d) => [d.name, d]));
    this.#workers = transports.map((transport) =>
      new VesselWorker(transport, {
        store,
        bandwidthLimit: config.vessels.find((v) => v.name === transport.vessel)?.bandwidthLimit,
        chunkSize: config.monster.chunkSize,
        retryFailed: options.retryFailed,
        backoff: options.backoff,
        directory: (name) => this.#directories.get(name),
        fileHash: (file, path, options) => this.#fileHash(file, path, options),
        onOutcome: (delivery, outcome) => this.#onOutcome(delivery, outcome),
        observer: options.observer ?? {},
      })
    );
  }

  /** The vessels that take files of `directory` (those not ignoring it). */
  vesselsFor(directory: string): string[] {
    return this.#config.vessels
      .filter((vessel) => !vessel.ignoreDirs.includes(directory))
      .map((vessel) => vessel.name);
  }

  /** Aligns the queue with the config, finalizes what is done, starts the workers. */
  async start(): Promise<void> {
    for (const directory of this.#config.directories) {
      this.#store.reconcile(directory.name, this.vesselsFor(directory.name));
    }
    for (const orphan of this.#store.orphanDirectories([...this.#directories.keys()])) {
      log.warn(`queued files of directory "${orphan}" wait: it is no longer configured`);
    }
    for (const file of this.#store.doneFiles()) this.#finalize(file);
    await this.#finalized();
    this.#running = Promise.all(this.#workers.map((worker) => worker.run(this.#abort.signal)));
    this.#removeLeftovers();
    this.#cleanupTimer = setInterval(() => this.#removeLeftovers(), CLEANUP_CHECK_MS);
  }

  /**
   * Removes what dropped deliveries left on the vessels (IgnoreDirs changed,
   * a vessel removed, a database lost) once it is a day old: once per run
   * and vessel, at the start, beside the first deliveries (a vessel's
   * connections are shared by its calls, and on a long link the cleanup's
   * round trips would otherwise come after the last delivery). A failure is
   * only logged.
   */
  #removeLeftovers(): void {
    for (const transport of this.#transports) {
      if (this.#abort.signal.aborted) continue;
      if (this.#cleaned.has(transport.vessel)) continue;
      this.#cleaned.add(transport.vessel);
      if (!transport.removeLeftovers) continue;
      const cleanup = this.#removeLeftoversOf(transport, transport.removeLeftovers.bind(transport));
      this.#cleanups.add(cleanup);
      cleanup.finally(() => this.#cleanups.delete(cleanup));
    }
  }

  async #removeLeftoversOf(
    transport: Transport,
    removeLeftovers: NonNullable<Transport["removeLeftovers"]>,
  ): Promise<void> {
    const keep = new Set(
      this.#store.deliveryNames().map(({ id, publishes }) =>
        deliveryKey(this.#store, id, publishes)
      ),
    );
    const vessel = this.#config.vessels.find((v) => v.name === transport.vessel);
    const destinations = this.#config.directories
      .filter((directory) => !vessel?.ignoreDirs.includes(directory.name))
      .map((directory) => directory.destination);
    try {
      const removed = await removeLeftovers({
        olderThanMs: LEFTOVER_AGE_MS,
        keep,
        destinations,
        others: { instanceId: this.#store.instanceId, olderThanMs: OTHER_SHORES_LEFTOVER_AGE_MS },
      });
      if (removed > 0) {
        logger(`vessel "${transport.vessel}"`).info(
          `removed ${removed} leftovers of dropped deliveries (older than a day; ` +
            `another shore's, 30 days)`,
        );
      }
    } catch (error) {
      if (this.#abort.signal.aborted) return;
      logger(`vessel "${transport.vessel}"`).warn(
        `cannot remove old leftovers: ${describeError(error)}`,
      );
    }
  }

  /**
   * Queues a ready file (new, or changed since it was queued). Files that
   * arrive together are recorded in one commit a few milliseconds later, so a
   * burst of small files costs one disk flush, not one per file.
   */
  enqueue(file: ReadyFileInfo): void {
    if (!this.#directories.has(file.directory)) return;
    this.#arrivals.push(file);
    this.#arrivalsFlush ??= setTimeout(() => this.#recordArrivals(), ARRIVALS_DELAY_MS);
  }

  #recordArrivals(): void {
    this.#arrivalsFlush = undefined;
    // In chunks, each its own commit, so a scan of 100,000 files never holds the event loop
    // (and the workers) for seconds; the rest waits for the next turn.
    const arrivals = this.#arrivals.splice(0, ARRIVALS_PER_COMMIT);
    if (this.#arrivals.length > 0) {
      this.#arrivalsFlush = setTimeout(() => this.#recordArrivals(), 0);
    }
    if (this.#abort.signal.aborted || arrivals.length === 0) return;
    const ready = arrivals.map((file) => ({ ...file, vessels: this.vesselsFor(file.directory) }));
    const results = this.#store.enqueueMany(ready);
    let queued = false;
    results.forEach(({ fileId, result }, i) => {
      const file = ready[i];
      if (result !== "unchanged") {
        log.debug(`${result} "${file.directory}/${file.relpath}" (${file.size} bytes)`);
        queued = true;
      }
      // A new file with a vessel to go to cannot be done yet: no query for each of a burst.
      const mayBeDone = result !== "new" || file.vessels.length === 0;
      if (mayBeDone && this.#store.isFileDone(fileId)) {
        const record = this.#store.file(fileId);
        if (record) this.#finalize(record);
      }
    });
    if (queued) this.#notifyAll();
  }

  /** Each vessel's health and deliveries in flight, in config order. */
  activity(): VesselActivity[] {
    return this.#workers.map((worker) => ({ health: worker.health(), inFlight: worker.inFlight }));
  }

  /**
   * Whether nothing is running and nothing is due, for `once`, which asks
   * often: what is in memory is asked first, the store only when that is idle.
   */
  idle(): boolean {
    const idle = this.#arrivals.length === 0 && this.#finalizing.size === 0 &&
      !this.#workers.some((worker) => worker.active) && this.#store.counts().pending === 0 &&
      this.#store.doneFiles().every((file) => this.#unmovable.has(file.id));
    if (!idle) return false;
    this.#removeLeftovers();
    return this.#cleanups.size === 0;
  }

  /** How many files every vessel holds that this run could not move to processed/. */
  unmovable(): number {
    return this.#unmovable.size;
  }

  /** Stops the workers and closes the transports; unfinished work resumes at the next start. */
  async stop(): Promise<void> {
    this.#abort.abort();
    clearInterval(this.#cleanupTimer);
    clearTimeout(this.#arrivalsFlush);
    // Closing rejects calls in flight, so a stalled transfer cannot delay the stop.
    await Promise.allSettled(this.#transports.map((transport) => transport.close()));
    await this.#running;
    await this.#finalized();
    await Promise.allSettled(this.#cleanups);
  }

  #notifyAll(): void {
    for (const worker of this.#workers) worker.notify();
  }

  #fileHash(file: FileRecord, path: string, options: { fresh?: boolean } = {}): Promise<string> {
    if (file.sha256 !== null && !options.fresh) return Promise.resolve(file.sha256);
    const key = `${file.id}:${file.version}`;
    let hash = options.fresh ? undefined : this.#hashes.get(key);
    if (!hash) {
      hash = hashSource(path, file);
      hash.catch(() => {}).finally(() => this.#hashes.delete(key));
      this.#hashes.set(key, hash);
    }
    return hash;
  }

  #onOutcome(delivery: DeliveryRecord, outcome: DeliveryOutcome): void {
    const fileId = delivery.file.id;
    if (outcome === "changed") {
      this.#notifyAll();
      return;
    }
    const file = this.#store.file(fileId);
    if (!file) return;
    if (outcome === "dropped" && !this.#store.hasDeliveries(fileId)) {
      this.#store.removeFile(fileId);
      log.info(`"${file.directory}/${file.relpath}" vanished before delivery; dropped`);
      return;
    }
    // Vanished after other vessels got it: the finalizer finds it gone and forgets it.
    if (this.#store.isFileDone(fileId)) this.#finalize(file);
  }

  /** Waits until no file is moving to processed/. */
  async #finalized(): Promise<void> {
    while (this.#finalizations.size > 0) await Promise.allSettled(this.#finalizations);
  }

  #finalize(file: FileRecord): void {
    if (!this.#directories.has(file.directory)) {
      this.#unmovable.add(file.id);
      return;
    }
    if (this.#finalizing.has(file.id)) return;
    this.#finalizing.add(file.id);
    this.#toFinalize.push(file);
    this.#startFinalizations();
  }

  #startFinalizations(): void {
    while (this.#finalizations.size < PARALLEL_FINALIZATIONS && this.#toFinalize.length > 0) {
      const file = this.#toFinalize.shift()!;
      const running = this.#finalizeNow(file, this.#directories.get(file.directory)!).finally(
        () => {
          this.#finalizations.delete(running);
          this.#startFinalizations();
        },
      );
      this.#finalizations.add(running);
    }
  }

  async #finalizeNow(file: FileRecord, directory: DirectoryConfig): Promise<void> {
    try {
      const vessels = this.#store.deliveredVessels(file.id);
      const outcome = await finalizeFile(this.#store, directory, file);
      if (outcome === "changed") this.#notifyAll();
      else this.#options.onProcessed?.(file.directory, file.relpath);
      if (outcome === "processed") {
        this.#options.observer?.processed?.(file.directory, file.relpath, vessels);
      }
    } catch (error) {
      this.#unmovable.add(file.id);
      logger(`"${file.directory}/${file.relpath}"`).error(
        `cannot move to processed/: ${describeError(error)}`,
      );
    } finally {
      this.#finalizing.delete(file.id);
    }
  }
}
