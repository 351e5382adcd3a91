/**
 * How many parts a vessel may have in flight at once, adapted to the link as
 * TCP adapts its window: all of them while the link holds; half as many (at
 * least one) after a connection is lost with parts in flight, once per loss;
 * one more after each `limit` parts that arrive whole. A link that drops
 * every few megabytes then carries one or two parts at a time and makes
 * progress, instead of losing every part in flight at every drop.
 */

/**
 * Parts in flight per connection: while one part's last round trips (close,
 * rename) run, the next one's data keeps the connection busy.
 */
export const PARTS_PER_CONNECTION = 2;

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
  readonly #bytesGivenBack = new WeakSet<PartTicket>();
  #maxBytes = Infinity;
  #streak = 0;
  /** Bumped at each decrease, so one loss that fails many parts halves once. */
  #epoch = 0;
  readonly #waiters: Waiter[] = [];

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
    this.#admit();
  }

  /**
   * Bytes the parts in flight may hold together (their buffers): large parts
   * then take fewer places. One part is let in whatever its size.
   */
  set maxBytes(maxBytes: number) {
    this.#maxBytes = maxBytes;
    this.#admit();
  }

  /** Parts in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Uploads waiting for a place now: more parts are ready than the window lets out. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** How many parts may be in flight now. */
  get limit(): number {
    return this.#limit;
  }

  /**
   * Waits for a place for a part of `bytes`; returns the ticket to give back
   * to {@linkcode release}. Places go to waiters in the order they came, and
   * a newcomer waits behind them: an upload that just finished a part must
   * not take the place of the parts before the one it would send next, which
   * the vessel's assembly waits for.
   */
  acquire(signal: AbortSignal, bytes = 0): Promise<PartTicket> {
    signal.throwIfAborted();
    if (this.#waiters.length === 0 && this.#fits(bytes)) return Promise.resolve(this.#take(bytes));
    return new Promise<PartTicket>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        admit: () => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.#take(bytes));
        },
      };
      const onAbort = () => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(signal.reason);
        this.#admit(); // The next one may fit where this one did not.
      };
      this.#waiters.push(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Gives back a part's bytes once its last ones are leaving, before the
   * vessel confirmed them: the next part may start behind them on the
   * connection, which would otherwise idle for the part's last round trips
   * (close, rename, then the next part's create). Its place stays taken
   * until {@linkcode release}.
   */
  partEnding(ticket: PartTicket): void {
    if (this.#bytesGivenBack.has(ticket)) return;
    this.#bytesGivenBack.add(ticket);
    this.#bytesInFlight -= ticket.bytes;
    this.#admit();
  }

  /** Gives a place back and adapts the limit to how the upload ended. */
  release(ticket: PartTicket, outcome: PartOutcome): void {
    this.#inFlight--;
    if (!this.#bytesGivenBack.delete(ticket)) this.#bytesInFlight -= ticket.bytes;
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
    this.#admit();
  }

  #fits(bytes: number): boolean {
    return this.#inFlight < this.#limit &&
      (this.#inFlight === 0 || this.#bytesInFlight + bytes <= this.#maxBytes);
  }

  #take(bytes: number): PartTicket {
    this.#inFlight++;
    this.#bytesInFlight += bytes;
    return { epoch: this.#epoch, bytes };
  }

  /** Lets in the waiters at the head of the line while they fit. */
  #admit(): void {
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0].bytes)) {
      this.#waiters.shift()!.admit();
    }
  }
}

interface Waiter {
  readonly bytes: number;
  admit(): void;
}
