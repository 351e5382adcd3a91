/** Bytes sent over a sliding window, for "throughput over the last minute". */

/** Counts bytes in one-second buckets and sums those of the last `windowMs`. */
export class Throughput {
  readonly #buckets: number[];
  readonly #bucketMs: number;
  /** The bucket index (time / bucketMs) each slot last held. */
  readonly #slots: number[];

  constructor(windowMs = 60_000, bucketMs = 1_000) {
    const count = Math.max(1, Math.ceil(windowMs / bucketMs));
    this.#buckets = new Array(count).fill(0);
    this.#slots = new Array(count).fill(-1);
    this.#bucketMs = bucketMs;
  }

  /** Counts `bytes` sent at `now`. */
  add(bytes: number, now = Date.now()): void {
    const index = Math.floor(now / this.#bucketMs);
    const slot = index % this.#buckets.length;
    if (this.#slots[slot] !== index) {
      this.#slots[slot] = index;
      this.#buckets[slot] = 0;
    }
    this.#buckets[slot] += bytes;
  }

  /**
   * Bytes per second over the window that ends at `now`, or over the time
   * since the oldest bytes in it when traffic began later (a transfer 15 s
   * old is not averaged over a minute). At least one second is assumed.
   */
  rate(now = Date.now()): number {
    const newest = Math.floor(now / this.#bucketMs);
    const oldest = newest - this.#buckets.length + 1;
    let first = Infinity;
    for (let slot = 0; slot < this.#buckets.length; slot++) {
      const index = this.#slots[slot];
      if (index >= oldest && index <= newest && this.#buckets[slot] > 0) {
        first = Math.min(first, index);
      }
    }
    if (first === Infinity) return 0;
    const spanMs = Math.max(1_000, now - first * this.#bucketMs);
    return this.total(now) / (spanMs / 1000);
  }

  /** Bytes counted within the window that ends at `now`. */
  total(now = Date.now()): number {
    const newest = Math.floor(now / this.#bucketMs);
    const oldest = newest - this.#buckets.length + 1;
    let sum = 0;
    for (let slot = 0; slot < this.#buckets.length; slot++) {
      if (this.#slots[slot] >= oldest && this.#slots[slot] <= newest) sum += this.#buckets[slot];
    }
    return sum;
  }
}
