/**
 * Where the last parts of a file go (issue 8). Streams sharing a link carry
 * very different rates: on `wan` (100 Mbit/s, 40 ms), four CUBIC streams
 * carried 0.8 to 4 MiB/s each, and a last part given to a slow one ended
 * seconds after the rest while the fast ones idled. Before the tail every
 * connection stays busy: on a lossy link each stream adds its own rate, and
 * a part kept off a slow stream there made 16 MiB slower (medians of 10:
 * 12.0 s against 11.0 s).
 */

/** What placing a part needs to know of a connection. */
export interface Lane {
  /** Bytes of its parts (and of those waiting for its login) the vessel has not answered. */
  readonly pendingBytes: number;
  /** Bytes per millisecond its parts were answered at; unset until measured. */
  readonly rate?: number;
  /** `up`; `login` if a part may wait for its login; `none` if stalled or no login may start. */
  readonly state: "up" | "login" | "none";
}

/**
 * What waiting for a login costs a part, in parts' worth of time at the
 * connections' mean rate: on a long link a login takes a dozen round trips.
 */
export const LOGIN_PARTS = 2;

/**
 * `picked` (the least busy connection), unless connections have shown their
 * rates and a part of `bytes` would end on `picked` after everything known
 * (the parts under way and `bytesAfter`, the rest of its file) could end at
 * the rate of all: then the lane that would have it answered soonest.
 * Connections not measured yet count at the mean rate of those measured.
 */
export function placePart<T extends Lane>(
  lanes: readonly T[],
  picked: T,
  bytes: number,
  bytesAfter: number,
): T {
  let total = 0;
  let measured = 0;
  let pending = 0;
  for (const lane of lanes) {
    pending += lane.pendingBytes;
    if (lane.state === "up" && lane.rate) {
      total += lane.rate;
      measured++;
    }
  }
  if (measured === 0) return picked;
  const mean = total / measured;
  const allDone = (pending + bytes + bytesAfter) / total;
  const doneOn = (lane: Lane): number =>
    lane.state === "up"
      ? (lane.pendingBytes + bytes) / (lane.rate || mean)
      : lane.state === "login"
      ? (lane.pendingBytes + (1 + LOGIN_PARTS) * bytes) / mean
      : Infinity;
  let best = picked;
  let soonest = doneOn(picked);
  if (soonest <= allDone) return picked;
  for (const lane of lanes) {
    const done = doneOn(lane);
    if (done < soonest) {
      best = lane;
      soonest = done;
    }
  }
  return best;
}

/** The shortest time a rate is sampled over, for links of a few milliseconds. */
const MIN_SAMPLE_MS = 250;
/** Round trips a rate is sampled over: answers come in bursts, one per round trip. */
const SAMPLE_ROUND_TRIPS = 4;
/** Bytes a connection's last part must have had answered since the last sample to make one. */
const MIN_IDLE_SAMPLE = 64 << 10;

/**
 * The rate a connection's parts are answered at, in samples of a few round
 * trips while it carries parts, each weighing half: a stream's rate moves
 * as TCP's window does. Time without parts does not count.
 */
export class AnswerRate {
  /** Bytes per millisecond; unset until the first sample. */
  bytesPerMs?: number;
  #since = 0;
  #bytes = 0;

  /** A part starts on a connection that carried none. */
  busy(now: number): void {
    this.#since = now;
    this.#bytes = 0;
  }

  /** The vessel answered `bytes` of a part's writes. */
  answered(bytes: number, now: number, roundTripMs: number): void {
    this.#bytes += bytes;
    const elapsed = now - this.#since;
    if (elapsed >= Math.max(MIN_SAMPLE_MS, SAMPLE_ROUND_TRIPS * roundTripMs)) this.#sample(now);
  }

  /**
   * The connection's last part ended: what it carried since the last sample
   * counts if it was enough, so parts that end within a sample's time (a
   * fast stream) give a rate too.
   */
  idle(now: number): void {
    if (this.#bytes >= MIN_IDLE_SAMPLE && now > this.#since) this.#sample(now);
  }

  #sample(now: number): void {
    const sample = this.#bytes / (now - this.#since);
    this.bytesPerMs = this.bytesPerMs === undefined ? sample : (this.bytesPerMs + sample) / 2;
    this.#since = now;
    this.#bytes = 0;
  }
}
