/** Paces uploads to a vessel so they average at most a given rate. */

/** Spreads byte transfers so their average stays at `bytesPerSecond`. */
export class RateLimit {
  readonly #bytesPerSecond: number;
  #nextFree = 0;

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) throw new RangeError(`Rate must be positive, got ${bytesPerSecond}`);
    this.#bytesPerSecond = bytesPerSecond;
  }

  /**
   * Waits until `bytes` may be sent, then books their share of the rate.
   * Rejects as soon as `signal` aborts, so a stop is never delayed by pacing.
   */
  async take(bytes: number, signal: AbortSignal): Promise<void> {
    const now = performance.now();
    const start = Math.max(now, this.#nextFree);
    this.#nextFree = start + (bytes / this.#bytesPerSecond) * 1000;
    const wait = start - now;
    if (wait <= 0) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(done, wait);
      signal.addEventListener("abort", abort, { once: true });
      function done() {
        signal.removeEventListener("abort", abort);
        resolve();
      }
      function abort() {
        clearTimeout(timer);
        reject(signal.reason);
      }
    });
  }
}
