/**
 * One loop per vessel: takes due deliveries from the store, runs a few at a
 * time, and backs off when the vessel fails, so a slow or dead vessel never
 * holds up the others.
 */
import type { DirectoryConfig } from "../config/types.ts";
import { describeError, logger } from "../log/logger.ts";
import type { DeliveryRecord, FileRecord, Store, VesselHealthRecord } from "../store/store.ts";
import { type Transport, TransportError } from "../../transports/transport.ts";
import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.ts";
import { ConnectionGovernor, FIRST_CONNECTIONS } from "./connection_governor.ts";
import { type DeliveryOutcome, runDelivery } from "./delivery.ts";
import { DeliverySlots, SMALL_FILE_BYTES } from "./delivery_slots.ts";
import type { EngineObserver } from "./observer.ts";
import { PARTS_PER_CONNECTION, PartWindow } from "./part_window.ts";
import { RateLimit } from "./rate_limit.ts";
import { formatRate } from "../log/units.ts";
import { Transfer } from "./transfer.ts";
import { VesselHealth } from "./vessel_health.ts";

/** What a worker needs from the engine. */
export interface WorkerContext {
  readonly store: Store;
  readonly chunkSize: number;
  /** Whether permanently failed deliveries are retried after their back-off. */
  readonly retryFailed: boolean;
  readonly backoff?: BackoffPolicy;
  /** Bytes per second this vessel's uploads may average; unlimited when absent. */
  readonly bandwidthLimit?: number;
  directory(name: string): DirectoryConfig | undefined;
  fileHash(file: FileRecord, sourcePath: string, options?: { fresh?: boolean }): Promise<string>;
  /** A delivery ended without error. */
  onOutcome(delivery: DeliveryRecord, outcome: DeliveryOutcome): void;
  /** Hears deliveries, progress and the vessel's health (logs, metrics). */
  readonly observer: EngineObserver;
}

/** Failures that say the vessel, not the file, is the problem. */
const VESSEL_WIDE = new Set([
  "connection",
  "host-key",
  "auth",
  "no-space",
  "unsupported",
  "unsafe",
]);
/** Failures no retry will fix without the operator. */
const NEEDS_OPERATOR = new Set(["host-key", "auth", "unsupported", "unsafe"]);
/** How long a permanently failed delivery waits before the daemon tries again. */
const PERMANENT_RETRY_MS = 10 * 60_000;
/** Longest sleep when nothing is due, so time-based work is never missed. */
const MAX_IDLE_MS = 5_000;
/**
 * A vessel without traffic for this long is idle rather than connected; a
 * stream of small files must not flip it (and write the store) per file.
 */
const QUIET_MS = 3_000;
/** How often the health record (throughput of the last minute) is written while running. */
const HEALTH_RECORD_MS = 10_000;
/** A new last success is written this soon, yet a stream of small files costs one write a second. */
const SUCCESS_RECORD_MS = 1_000;
/** How often the connection count, and the part window with it, is reconsidered. */
const TUNE_MS = 250;
/**
 * Part bytes in flight per open connection: two small parts each, but one
 * part of ChunkSize's default 10 MiB, and the next one from when its last
 * bytes leave (see {@linkcode PartWindow.partEnding}). Waiting for its last round
 * trips idled the connection between parts, and CUBIC shrank its window
 * meanwhile (wan, `Connections = 1`, 64 MiB in 10 MiB parts: 7.8-8.0 s,
 * then 6.9 s, scp 6.8 s). (Parts are read as they are sent, so this is not
 * what they hold in memory.)
 */
const BYTES_PER_CONNECTION = 12 << 20;

/** The worker of one vessel. */
export class VesselWorker {
  readonly vessel: string;
  readonly #transport: Transport;
  readonly #context: WorkerContext;
  readonly #health: VesselHealth;
  /** Parts each unfinished delivery has sent in this process: a second upload is a resend. */
  readonly #sentParts = new Map<number, Set<number>>();
  #lastActivity = 0;
  #healthRecordedAt = 0;
  #successUnrecorded = false;
  readonly #busy = new Map<number, Promise<void>>();
  readonly #slots: DeliverySlots;
  readonly #rateLimit: RateLimit | undefined;
  readonly #window: PartWindow;
  readonly #governor?: ConnectionGovernor;
  #lastReading?: ConnectionGovernor["lastReading"];
  #wake: () => void = () => {};
  #blockedUntil = 0;
  #vesselFailures = 0;
  /** The pool's acknowledged bytes at the last vessel-wide failure. */
  #acknowledgedAtFailure = 0;

  constructor(transport: Transport, context: WorkerContext) {
    this.vessel = transport.vessel;
    this.#transport = transport;
    this.#context = context;
    const recorded = context.store.vesselHealth().find((h) => h.vessel === transport.vessel);
    this.#health = new VesselHealth(transport.vessel, (before, after) => {
      this.#recordHealth(after);
      context.observer.vesselChanged?.({ before, after });
    }, { lastSuccessAt: recorded?.lastSuccessAt });
    this.#rateLimit = context.bandwidthLimit ? new RateLimit(context.bandwidthLimit) : undefined;
    const { parallelParts, parallelDeliveries } = transport.capabilities;
    const pool = transport.connections;
    if (pool?.adaptive) {
      this.#governor = new ConnectionGovernor({
        max: pool.max,
        start: FIRST_CONNECTIONS,
        cores: navigator.hardwareConcurrency,
      });
    }
    this.#window = new PartWindow(Math.max(1, parallelParts * parallelDeliveries));
    if (pool) {
      // An adaptive vessel's window follows its open connections (see #tune), from one.
      this.#sizeWindow(this.#governor ? 1 : pool.max);
      pool.use(this.#governor?.target ?? pool.max);
    }
    this.#slots = new DeliverySlots(
      parallelDeliveries,
      Math.min(SMALL_FILE_BYTES, context.chunkSize),
    );
  }

  /** Whether a delivery is running now. */
  get active(): boolean {
    return this.#busy.size > 0;
  }

  /** Deliveries running now. */
  get inFlight(): number {
    return this.#busy.size;
  }

  /** The vessel's health now. */
  health(): VesselHealthRecord {
    return this.#health.snapshot();
  }

  /** Looks for due work now (new files, a changed file). */
  notify(): void {
    this.#wake();
  }

  /** Runs until `signal` aborts, then waits for running deliveries to end. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.#wake();
    signal.addEventListener("abort", onAbort);
    const tuner = this.#governor && setInterval(() => this.#tune(), TUNE_MS);
    try {
      this.#recordHealth(this.#health.snapshot());
      while (!signal.aborted) {
        const heldBack = this.#startDue(signal);
        this.#heartbeat();
        await this.#sleep(this.#sleepMs(heldBack));
      }
    } finally {
      clearInterval(tuner);
      signal.removeEventListener("abort", onAbort);
      await Promise.allSettled(this.#busy.values());
    }
  }

  /** Lets as many parts, and part bytes, in flight as `connections` carry. */
  #sizeWindow(connections: number): void {
    this.#window.max = PARTS_PER_CONNECTION * connections;
    this.#window.maxBytes = BYTES_PER_CONNECTION * connections;
  }

  /** Sizes the vessel's connections to what the link carries (see connection_governor.ts). */
  #tune(): void {
    const pool = this.#transport.connections;
    if (!pool || !this.#governor) return;
    const before = this.#governor.target;
    const target = this.#governor.tick(
      Date.now(),
      pool.acknowledgedBytes,
      this.#window.waiting > 0,
      pool.open,
      pool.roundTripMs,
    );
    const reading = this.#governor.lastReading;
    if (reading && reading !== this.#lastReading) {
      logger(`vessel "${this.vessel}"`).debug(
        `connections: ${reading.open} carry ${formatRate(reading.bytesPerSecond)}`,
      );
    }
    this.#lastReading = reading;
    // Parts start as connections open: a part handed to one still logging in would wait
    // there, and arrive last, while those already open could carry it.
    const open = Math.max(1, Math.min(target, pool.open));
    if (PARTS_PER_CONNECTION * open !== this.#window.max) this.#sizeWindow(open);
    if (target === before) return;
    logger(`vessel "${this.vessel}"`).debug(
      `connections: ${before} -> ${target} (${pool.open} open` +
        (reading ? `; ${formatRate(reading.bytesPerSecond)} with ${reading.open}` : "") + ")",
    );
    pool.use(target);
  }

  /** Starts the due deliveries that fit; true when one is left waiting for a free slot. */
  #startDue(signal: AbortSignal): boolean {
    const now = Date.now();
    if (now < this.#blockedUntil) return false;
    const free = this.#slots.free;
    if (free <= 0) return false;
    const due = this.#context.store.nextDeliveries(
      this.vessel,
      now,
      free,
      this.#busy.keys(),
      this.#context.retryFailed,
    );
    for (const delivery of due) {
      // In file order: a large file waiting for a slot holds back the files after it.
      if (!this.#slots.fits(delivery.file.size)) return true;
      this.#slots.start(delivery.id, delivery.file.size);
      const running = this.#attempt(delivery, signal).finally(() => {
        this.#slots.end(delivery.id);
        this.#busy.delete(delivery.id);
        this.#wake();
      });
      this.#busy.set(delivery.id, running);
    }
    return false;
  }

  /** Marks a quiet vessel idle and keeps the recorded throughput fresh for `status`. */
  #heartbeat(): void {
    const now = Date.now();
    if (this.#busy.size === 0 && now - this.#lastActivity >= QUIET_MS) this.#health.quiet(now);
    const since = now - this.#healthRecordedAt;
    if (since >= HEALTH_RECORD_MS || this.#successUnrecorded && since >= SUCCESS_RECORD_MS) {
      this.#recordHealth(this.#health.snapshot(now));
    }
  }

  #recordHealth(record: VesselHealthRecord): void {
    this.#healthRecordedAt = record.updatedAt ?? Date.now();
    this.#successUnrecorded = false;
    try {
      this.#context.store.recordVesselHealth(record);
    } catch (error) {
      // Only `status` reads it: a failed write must not stop deliveries.
      logger(`vessel "${this.vessel}"`).debug(`cannot record health: ${describeError(error)}`);
    }
  }

  /** `heldBack`: a due delivery waits for a free slot. */
  #sleepMs(heldBack: boolean): number {
    const now = Date.now();
    if (now < this.#blockedUntil) return this.#blockedUntil - now;
    // A delivery that ends wakes the worker: what waits for a slot needs no timer.
    if (heldBack || this.#slots.free <= 0) return MAX_IDLE_MS;
    const due = this.#context.store.nextDueAt(
      this.vessel,
      this.#context.retryFailed,
      this.#busy.keys(),
    );
    if (due === undefined) return MAX_IDLE_MS;
    return Math.min(MAX_IDLE_MS, Math.max(0, due - now));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  async #attempt(delivery: DeliveryRecord, signal: AbortSignal): Promise<void> {
    const directory = this.#context.directory(delivery.file.directory);
    if (!directory) {
      this.#context.store.markAttemptFailed(
        delivery.id,
        `directory "${delivery.file.directory}" is no longer configured`,
        Date.now() + PERMANENT_RETRY_MS,
        true,
      );
      return;
    }
    let sentParts = this.#sentParts.get(delivery.id);
    if (!sentParts) this.#sentParts.set(delivery.id, sentParts = new Set());
    const transfer = new Transfer(
      delivery,
      this.#context.observer,
      this.#health,
      sentParts,
    );
    const log = logger(
      `vessel "${this.vessel}": "${delivery.file.directory}/${delivery.file.relpath}"`,
    );
    this.#lastActivity = Date.now();
    try {
      const outcome = await runDelivery(
        {
          store: this.#context.store,
          transport: this.#transport,
          chunkSize: this.#context.chunkSize,
          signal,
          fileHash: (file, path, options) => this.#context.fileHash(file, path, options),
          pace: this.#rateLimit && ((bytes, signal) => this.#rateLimit!.take(bytes, signal)),
          window: this.#window,
          progress: {
            planned: (parts, present, partSize) => transfer.planned(parts, present, partSize),
            sending: (index) => transfer.sending(index),
            sent: (index, bytes, bySpare) => {
              // Progress: the vessel works, so its next failure backs off from the start again.
              this.#vesselFailures = 0;
              this.#lastActivity = Date.now();
              transfer.sent(index, bytes);
              log.debug(
                `part ${index} sent (${bytes} bytes${bySpare ? ", by its spare copy" : ""})`,
              );
            },
            spareSent: (index) =>
              log.debug(
                `part ${index}'s stream stopped: a spare copy leaves on an idle connection`,
              ),
          },
        },
        delivery,
        directory,
      );
      this.#vesselFailures = 0;
      this.#blockedUntil = 0;
      this.#lastActivity = Date.now();
      this.#sentParts.delete(delivery.id);
      log.debug(outcome);
      if (outcome === "delivered") {
        this.#health.delivered();
        this.#successUnrecorded = true;
        this.#context.observer.delivered?.(transfer.report());
      }
      this.#context.onOutcome(delivery, outcome);
    } catch (error) {
      if (signal.aborted) return; // stopping: the attempt resumes at the next start
      this.#failed(delivery, error);
    }
  }

  #failed(delivery: DeliveryRecord, error: unknown): void {
    const message = describeError(error);
    const code = error instanceof TransportError ? error.code : undefined;
    const now = Date.now();
    const policy = this.#context.backoff ?? DEFAULT_BACKOFF;
    const permanent = code !== undefined && NEEDS_OPERATOR.has(code) ||
      error instanceof TransportError && !error.retryable;
    let retryAt: number;
    if (code !== undefined && VESSEL_WIDE.has(code)) {
      // Deliveries that fail together (one dropped connection) count as one failure.
      if (now >= this.#blockedUntil) {
        // A try the vessel acknowledged bytes of made progress (a resumed
        // part keeps them), so on a link that breaks often but carries data
        // the next try comes after the first back-off step, not a longer one.
        const acknowledged = this.#transport.connections?.acknowledgedBytes ?? 0;
        if (acknowledged > this.#acknowledgedAtFailure) this.#vesselFailures = 0;
        this.#acknowledgedAtFailure = acknowledged;
        this.#vesselFailures++;
        this.#blockedUntil = now + backoffDelay(this.#vesselFailures, policy);
      }
      retryAt = this.#blockedUntil;
      if (permanent) retryAt = Math.max(retryAt, now + PERMANENT_RETRY_MS);
      this.#health.failed(vesselReason(error), retryAt, permanent, now);
    } else {
      const immediately = code === "part-missing" && delivery.attempts < 3;
      retryAt = immediately ? now : now + backoffDelay(delivery.attempts + 1, policy);
      if (permanent) retryAt = Math.max(retryAt, now + PERMANENT_RETRY_MS);
    }
    this.#context.observer.failed?.({
      vessel: this.vessel,
      file: delivery.file,
      code: code ?? "other",
      message,
      vesselWide: code !== undefined && VESSEL_WIDE.has(code),
      retryAt,
    });
    this.#context.store.markAttemptFailed(delivery.id, message, retryAt, permanent);
  }
}

/**
 * What is wrong with the vessel, without the file action that met it: the
 * innermost transport error of the chain ("Cannot connect to vessel ..."),
 * so deliveries failing for one reason tell one reason.
 */
function vesselReason(error: unknown): string {
  let reason = error;
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof TransportError) reason = cause;
  }
  return describeError(reason);
}
