/**
 * How many parts a vessel may have in flight at once, adapted to the link as
 * TCP adapts its window: all of them while the link holds; half as many (at
 * least one) after a connection is lost with parts in flight, once per loss;
 * one more after each `limit` parts that arrive whole. A link that drops
 * every few megabytes then carries one or two parts at a time and makes
 * progress, instead of losing every part in flight at every drop.
 */

/** What became of a part upload that held a place in the window. */
export type PartOutcome = "whole" | "lost" | "failed";

/** A place in the window, given back with {@linkcode PartWindow.release}. */
export interface PartTicket {
  readonly epoch: number;
  readonly bytes: number;
}

/** A shared limit on a vessel's parts in flight. */
export class PartWindow {
  /** The limit while the link holds: the connections the vessel uses now. */
  #max: number;
  #limit: number;
  #inFlight = 0;
  #bytesInFlight = 0;
  #maxBytes = Infinity;
  #streak = 0;
  /** Bumped at each decrease, so one loss that fails many parts halves once. */
  #epoch = 0;
  readonly #waiters = new Set<() => void>();

  constructor(max: number) {
    if (!(Number.isSafeInteger(max) && max >= 1)) {
      throw new RangeError(`Cannot create a part window of "${max}" parts: must be >= 1`);
    }
    this.#max = max;
    this.#limit = max;
  }

  /** The limit while the link holds. */
  get max(): number {
    return this.#max;
  }

  /**
   * Follows the connections the vessel uses: a larger window opens at once
   * (the link has room, so its losses so far say nothing of it), a smaller
   * one takes effect as parts settle.
   */
  set max(max: number) {
    if (!(Number.isSafeInteger(max) && max >= 1)) {
      throw new RangeError(`Cannot set a part window of "${max}" parts: must be >= 1`);
    }
    if (max > this.#max) this.#limit += max - this.#max;
    this.#max = max;
    this.#limit = Math.min(this.#limit, max);
    this.#wakeAll();
  }

  /**
   * Bytes the parts in flight may hold together (their buffers): large parts
   * then take fewer places. One part is let in whatever its size.
   */
  set maxBytes(maxBytes: number) {
    this.#maxBytes = maxBytes;
    this.#wakeAll();
  }

  /** Parts in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Uploads waiting for a place now: more parts are ready than the window lets out. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** How many parts may be in flight now. */
  get limit(): number {
    return this.#limit;
  }

  /**
   * Waits for a place for a part of `bytes`; returns the ticket to give back
   * to {@linkcode release}.
   */
  async acquire(signal: AbortSignal, bytes = 0): Promise<PartTicket> {
    while (
      this.#inFlight >= this.#limit ||
      this.#inFlight > 0 && this.#bytesInFlight + bytes > this.#maxBytes
    ) {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          this.#waiters.delete(wake);
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          this.#waiters.delete(wake);
          reject(signal.reason);
        };
        this.#waiters.add(wake);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    }
    signal.throwIfAborted();
    this.#inFlight++;
    this.#bytesInFlight += bytes;
    return { epoch: this.#epoch, bytes };
  }

  /** Gives a place back and adapts the limit to how the upload ended. */
  release(ticket: PartTicket, outcome: PartOutcome): void {
    this.#inFlight--;
    this.#bytesInFlight -= ticket.bytes;
    if (outcome === "whole") {
      if (++this.#streak >= this.#limit && this.#limit < this.#max) {
        this.#limit++;
        this.#streak = 0;
      }
    } else if (outcome === "lost" && ticket.epoch === this.#epoch) {
      this.#limit = Math.max(1, Math.floor(this.#limit / 2));
      this.#streak = 0;
      this.#epoch++;
    }
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}
