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

/** A shared limit on a vessel's parts in flight. */
export class PartWindow {
  /** The limit while the link holds. */
  readonly max: number;
  #limit: number;
  #inFlight = 0;
  #streak = 0;
  /** Bumped at each decrease, so one loss that fails many parts halves once. */
  #epoch = 0;
  readonly #waiters = new Set<() => void>();

  constructor(max: number) {
    if (!(Number.isSafeInteger(max) && max >= 1)) {
      throw new RangeError(`Cannot create a part window of "${max}" parts: must be >= 1`);
    }
    this.max = max;
    this.#limit = max;
  }

  /** How many parts may be in flight now. */
  get limit(): number {
    return this.#limit;
  }

  /** Waits for a place; returns the ticket to give back to {@linkcode release}. */
  async acquire(signal: AbortSignal): Promise<number> {
    while (this.#inFlight >= this.#limit) {
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
    return this.#epoch;
  }

  /** Gives a place back and adapts the limit to how the upload ended. */
  release(ticket: number, outcome: PartOutcome): void {
    this.#inFlight--;
    if (outcome === "whole") {
      if (++this.#streak >= this.#limit && this.#limit < this.max) {
        this.#limit++;
        this.#streak = 0;
      }
    } else if (outcome === "lost" && ticket === this.#epoch) {
      this.#limit = Math.max(1, Math.floor(this.#limit / 2));
      this.#streak = 0;
      this.#epoch++;
    }
    for (const wake of [...this.#waiters]) wake();
  }
}
