/**
 * One loop per vessel: takes due deliveries from the store, runs a few at a
 * time, and backs off when the vessel fails, so a slow or dead vessel never
 * holds up the others.
 */
import type { DirectoryConfig } from "../config/types.ts";
import { describeError, type Logger, logger } from "../log/logger.ts";
import type { DeliveryRecord, FileRecord, Store } from "../store/store.ts";
import { type Transport, TransportError } from "../../transports/transport.ts";
import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.ts";
import { type DeliveryOutcome, runDelivery } from "./delivery.ts";
import { PartWindow } from "./part_window.ts";
import { RateLimit } from "./rate_limit.ts";

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
  fileHash(file: FileRecord, sourcePath: string): Promise<string>;
  /** A delivery ended without error. */
  onOutcome(delivery: DeliveryRecord, outcome: DeliveryOutcome): void;
}

/** Failures that say the vessel, not the file, is the problem. */
const VESSEL_WIDE = new Set(["connection", "host-key", "auth", "no-space", "unsupported"]);
/** Failures no retry will fix without the operator. */
const NEEDS_OPERATOR = new Set(["host-key", "auth", "unsupported"]);
/** How long a permanently failed delivery waits before the daemon tries again. */
const PERMANENT_RETRY_MS = 10 * 60_000;
/** Longest sleep when nothing is due, so time-based work is never missed. */
const MAX_IDLE_MS = 5_000;

/** The worker of one vessel. */
export class VesselWorker {
  readonly vessel: string;
  readonly #transport: Transport;
  readonly #context: WorkerContext;
  readonly #log: Logger;
  readonly #busy = new Map<number, Promise<void>>();
  readonly #rateLimit: RateLimit | undefined;
  readonly #window: PartWindow;
  #wake: () => void = () => {};
  #blockedUntil = 0;
  #vesselFailures = 0;
  #vesselError: string | null = null;

  constructor(transport: Transport, context: WorkerContext) {
    this.vessel = transport.vessel;
    this.#transport = transport;
    this.#context = context;
    this.#log = logger(`vessel "${transport.vessel}"`);
    this.#rateLimit = context.bandwidthLimit ? new RateLimit(context.bandwidthLimit) : undefined;
    const { parallelParts, parallelDeliveries } = transport.capabilities;
    this.#window = new PartWindow(Math.max(1, parallelParts * parallelDeliveries));
  }

  /** Whether a delivery is running now. */
  get active(): boolean {
    return this.#busy.size > 0;
  }

  /** Looks for due work now (new files, a changed file). */
  notify(): void {
    this.#wake();
  }

  /** Runs until `signal` aborts, then waits for running deliveries to end. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.#wake();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        this.#startDue(signal);
        await this.#sleep(this.#sleepMs());
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      await Promise.allSettled(this.#busy.values());
    }
  }

  #startDue(signal: AbortSignal): void {
    const now = Date.now();
    if (now < this.#blockedUntil) return;
    const free = this.#transport.capabilities.parallelDeliveries - this.#busy.size;
    if (free <= 0) return;
    const due = this.#context.store.nextDeliveries(
      this.vessel,
      now,
      free,
      this.#busy.keys(),
      this.#context.retryFailed,
    );
    for (const delivery of due) {
      const running = this.#attempt(delivery, signal).finally(() => {
        this.#busy.delete(delivery.id);
        this.#wake();
      });
      this.#busy.set(delivery.id, running);
    }
  }

  #sleepMs(): number {
    const now = Date.now();
    if (now < this.#blockedUntil) return this.#blockedUntil - now;
    const due = this.#context.store.nextDueAt(this.vessel, this.#context.retryFailed);
    if (due === undefined || this.#busy.size >= this.#transport.capabilities.parallelDeliveries) {
      return MAX_IDLE_MS;
    }
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
    const subject =
      `vessel "${this.vessel}": "${delivery.file.directory}/${delivery.file.relpath}"`;
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
    try {
      const outcome = await runDelivery(
        {
          store: this.#context.store,
          transport: this.#transport,
          chunkSize: this.#context.chunkSize,
          signal,
          fileHash: (file, path) => this.#context.fileHash(file, path),
          pace: this.#rateLimit && ((bytes, signal) => this.#rateLimit!.take(bytes, signal)),
          window: this.#window,
          onPart: (_, index, bytes) => {
            // Progress: the vessel works, so its next failure backs off from the start again.
            this.#vesselFailures = 0;
            logger(subject).debug(`part ${index} sent (${bytes} bytes)`);
          },
        },
        delivery,
        directory,
      );
      this.#vesselRecovered();
      logger(subject).debug(outcome);
      this.#context.onOutcome(delivery, outcome);
    } catch (error) {
      if (signal.aborted) return; // stopping: the attempt resumes at the next start
      this.#failed(delivery, error, subject);
    }
  }

  #failed(delivery: DeliveryRecord, error: unknown, subject: string): void {
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
        this.#vesselFailures++;
        this.#blockedUntil = now + backoffDelay(this.#vesselFailures, policy);
      }
      retryAt = this.#blockedUntil;
      if (message !== this.#vesselError) {
        this.#log.error(`${message} (retrying in ${Math.round((retryAt - now) / 1000)} s)`);
      }
      this.#vesselError = message;
      this.#context.store.setVesselError(this.vessel, message);
    } else {
      const immediately = code === "part-missing" && delivery.attempts < 3;
      retryAt = immediately ? now : now + backoffDelay(delivery.attempts + 1, policy);
      logger(subject).warn(message);
    }
    if (permanent) retryAt = Math.max(retryAt, now + PERMANENT_RETRY_MS);
    this.#context.store.markAttemptFailed(delivery.id, message, retryAt, permanent);
  }

  #vesselRecovered(): void {
    this.#vesselFailures = 0;
    this.#blockedUntil = 0;
    if (this.#vesselError !== null) {
      this.#log.info("works again");
      this.#vesselError = null;
      this.#context.store.setVesselError(this.vessel, null);
    }
  }
}
