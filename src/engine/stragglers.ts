/**
 * The parts of a file that straggle once all of it is under way. A part on a
 * stream that lost packets waits for its retransmission timer and, with
 * CUBIC, for a window that grows back slowly: it can end seconds after the
 * rest (sat, 600 ms: 3.6 s; wan, 40 ms: up to a second) while the other
 * connections idle. Such a part is sent a second time, as a copy under a
 * temp name of its own, and whichever copy ends first makes it whole.
 *
 * @module
 */

/** A part is copied once under way this many times as long as the file's median part. */
export const COPY_AFTER_MEDIANS = 1.5;
/**
 * Nor before it has been under way this long: on a LAN parts take
 * milliseconds, and a copy would only cost CPU.
 */
export const COPY_AFTER_MS = 250;
/** How often the end of a file is looked at for parts to copy. */
export const STRAGGLER_POLL_MS = 50;

/** When each part of one file started and ended, and which were copied. */
export class Stragglers {
  readonly #started = new Map<number, number>();
  readonly #copied = new Set<number>();
  readonly #durations: number[] = [];

  /** Part `index` started being sent at `at` (milliseconds). */
  started(index: number, at: number): void {
    if (!this.#started.has(index)) this.#started.set(index, at);
  }

  /** Part `index` is whole on the vessel at `at`. */
  whole(index: number, at: number): void {
    const started = this.#started.get(index);
    if (started === undefined) return;
    this.#started.delete(index);
    this.#durations.push(at - started);
  }

  /**
   * The part to copy at `now`, if any: of those under way and not copied
   * yet, the one under way longest, once that is more than
   * {@linkcode COPY_AFTER_MEDIANS} times the median of the parts whole so
   * far, and more than {@linkcode COPY_AFTER_MS}. Each part is named once.
   */
  next(now: number): number | undefined {
    if (this.#durations.length === 0) return undefined;
    const sorted = [...this.#durations].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    let oldest: number | undefined;
    let oldestStart = Infinity;
    for (const [index, started] of this.#started) {
      if (!this.#copied.has(index) && started < oldestStart) {
        oldest = index;
        oldestStart = started;
      }
    }
    const waited = now - oldestStart;
    if (oldest === undefined || waited <= COPY_AFTER_MS || waited <= COPY_AFTER_MEDIANS * median) {
      return undefined;
    }
    this.#copied.add(oldest);
    return oldest;
  }
}
