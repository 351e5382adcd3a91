/**
 * Whether the shore restarts TCP's slow start on a connection after a pause:
 * Linux does (`net.ipv4.tcp_slow_start_after_idle = 1`, its default) once a
 * connection idled longer than its retransmission timeout, so on a long link
 * every file that follows a pause starts from the initial window again (on a
 * 600 ms link a 256 KiB part then takes 5 round trips). `check` and the
 * daemon's log say so where it costs seconds; the README's "Connections on
 * slow, long and lossy links" gives the measurement.
 *
 * @module
 */

/** A round trip from which a pause between files costs seconds. */
export const LONG_ROUND_TRIP_MS = 100;

const SLOW_START_AFTER_IDLE = "/proc/sys/net/ipv4/tcp_slow_start_after_idle";

/** What the operator may change, and why, on a link of `roundTripMs`. */
export function slowStartAdvice(roundTripMs: number): string {
  return `the round trip is ${Math.round(roundTripMs)} ms and this shore restarts TCP's slow ` +
    "start after every pause (net.ipv4.tcp_slow_start_after_idle = 1), so each file after " +
    "one starts slowly: set it to 0 (README: Connections on slow, long and lossy links)";
}

/** Whether the shore restarts slow start after idle; false where that cannot be read. */
export function shoreRestartsSlowStart(): Promise<boolean> {
  return Deno.readTextFile(SLOW_START_AFTER_IDLE).then(
    (text) => text.trim() === "1",
    () => false, // Not Linux, or not readable: nothing to advise.
  );
}
