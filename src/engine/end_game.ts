/**
 * The end of a file's upload (issue 8). Once every part has left, a part
 * stuck on a stream that stopped is the whole file's tail while the other
 * connections idle: on `sat` (600 ms, 0.5 % loss) such a part waited until
 * the stall was detected, 11 s later, and then started again in slow start.
 * As in BitTorrent's end game, such a part gets a spare copy on an idle
 * connection (`Transport.putSparePart`), and whichever copy ends first
 * makes it whole. Unlike BitTorrent's, only an overdue part is offered one,
 * and the transport sends it only if the part's stream has stalled: a spare
 * doubles the part's bytes, and on a full link spares slow the other parts
 * (`wan`: 64 MiB took 7.2 s against 6.8-6.9 s when every overdue part got
 * one).
 *
 * @module
 */

/** A part is overdue after this many times the median time the parts of the file took. */
export const OVERDUE_FACTOR = 1.5;
/**
 * A part is never overdue sooner: on a fast link a tail shorter than this
 * costs less than the bytes of a spare copy.
 */
export const OVERDUE_MIN_MS = 1_000;

/** Which part of a file, if any, should get a spare copy now. */
export class EndGame {
  /** When each part's first copy started, until the part is whole. */
  readonly #startedAt = new Map<number, number>();
  /** Parts whose first copy is under way. */
  readonly #inFlight = new Set<number>();
  /** Parts in flight that have no spare. */
  readonly #candidates = new Set<number>();
  readonly #durations: number[] = [];
  readonly #parts: number;

  /** The end game of `parts` parts to send. */
  constructor(parts: number) {
    this.#parts = parts;
  }

  /** Part `index`'s first copy started at `now` (milliseconds). */
  started(index: number, now: number): void {
    this.#startedAt.set(index, now);
    this.#inFlight.add(index);
    this.#candidates.add(index);
  }

  /** Part `index`'s first copy ended, whatever its outcome: a spare would race nothing. */
  ended(index: number): void {
    this.#inFlight.delete(index);
    this.#candidates.delete(index);
  }

  /** Part `index` has a spare under way: it gets no other. */
  spared(index: number): void {
    this.#candidates.delete(index);
  }

  /** Part `index`'s spare could not start (no idle connection): it may get one later. */
  unspared(index: number): void {
    if (this.#inFlight.has(index)) this.#candidates.add(index);
  }

  /** Part `index` is whole (by either copy): its time counts towards what overdue is. */
  whole(index: number, now: number): void {
    const started = this.#startedAt.get(index);
    if (started !== undefined) this.#durations.push(now - started);
    this.#startedAt.delete(index);
    this.ended(index);
  }

  /**
   * Milliseconds a part may run before it is overdue, or `undefined` before
   * half the parts are whole: before that, a part is late only behind a
   * login or a slow start, and the parts whole are the fast ones.
   */
  #overdueAfter(): number | undefined {
    if (this.#durations.length === 0 || 2 * this.#durations.length < this.#parts) {
      return undefined;
    }
    const sorted = [...this.#durations].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    return Math.max(OVERDUE_MIN_MS, OVERDUE_FACTOR * median);
  }

  /** The oldest part in flight without a spare, and when it started. */
  #oldest(): { index: number; start: number } | undefined {
    let oldest: { index: number; start: number } | undefined;
    for (const index of this.#candidates) {
      const start = this.#startedAt.get(index)!;
      if (!oldest || start < oldest.start) oldest = { index, start };
    }
    return oldest;
  }

  /** The parts without a spare that are overdue at `now`, the longest in flight first. */
  overdue(now: number): number[] {
    const after = this.#overdueAfter();
    if (after === undefined) return [];
    return [...this.#candidates]
      .filter((index) => now - this.#startedAt.get(index)! >= after)
      .sort((a, b) => this.#startedAt.get(a)! - this.#startedAt.get(b)!);
  }

  /** Milliseconds from `now` until a part without a spare becomes overdue; `Infinity` if none. */
  nextDueIn(now: number): number {
    const after = this.#overdueAfter();
    const oldest = this.#oldest();
    if (after === undefined || !oldest) return Infinity;
    return Math.max(0, oldest.start + after - now);
  }
}
