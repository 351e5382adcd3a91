/**
 * Where the last parts of a file go (issue 8). Streams sharing a link carry
 * very different rates, and keep to them: on `wan` (100 Mbit/s, 40 ms),
 * four CUBIC streams carried 0.8 to 4 MiB/s each, and a last part given to
 * a slow one ended seconds after the rest while the fast ones idled. Before
 * the tail every connection stays busy: on a lossy link each stream adds
 * its own rate, and giving every part to the connection that would end it
 * soonest made `lossy` slower (16 MiB, medians of 10: 12.0 s against 11.0).
 *
 * A part also stays where it ends no later than what the connections carry
 * already. Without that, a connection slower than the mean never got a part
 * while the window was full, and `lossy` took 12.9 s against 11.2 (medians
 * of 6, taking turns); `wan` gave back some of its gain (7.6 s against 7.1),
 * since its streams share one full link and a part on a slow one slows the
 * others: the transport cannot tell the two links apart.
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
 * rates and a part of `bytes` would end on `picked` after what they carry
 * already drains, and after everything known (the parts under way and
 * `bytesAfter`, the rest of its file) could end at the rate of all: then
 * the lane that would have it answered soonest.
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
  // Ending no later than what the connections carry already costs nothing: mid-file on a lossy
  // link the slowest of them drains last anyway, and every stream adds its rate.
  let carried = 0;
  for (const lane of lanes) {
    if (lane.state === "up") carried = Math.max(carried, lane.pendingBytes / (lane.rate || mean));
  }
  const allDone = Math.max(carried, (pending + bytes + bytesAfter) / total);
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

/** Bytes answered before a connection's rate counts. */
const MIN_MEASURED = 64 << 10;

/**
 * The rate a connection's parts are answered at: all their bytes over all
 * the time it carried parts (not the time idle). Averaged over its whole
 * life, not the last round trips: on a lossy link every stream's rate swings
 * with each loss, and only lasting differences (streams sharing a full link
 * unfairly) should move parts.
 */
export class AnswerRate {
  #bytes = 0;
  #busyMs = 0;
  #since: number | undefined;

  /** Bytes per millisecond at `now`; unset until enough was answered. */
  bytesPerMs(now: number): number | undefined {
    const busyMs = this.#busyMs + (this.#since === undefined ? 0 : now - this.#since);
    return this.#bytes >= MIN_MEASURED && busyMs > 0 ? this.#bytes / busyMs : undefined;
  }

  /** A part starts on a connection that carried none. */
  busy(now: number): void {
    this.#since = now;
  }

  /** The vessel answered `bytes` of a part's writes. */
  answered(bytes: number): void {
    this.#bytes += bytes;
  }

  /** The connection's last part ended. */
  idle(now: number): void {
    if (this.#since !== undefined) this.#busyMs += now - this.#since;
    this.#since = undefined;
  }
}
