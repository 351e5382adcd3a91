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

/**
 * What the operator may change, and why, on a link of `roundTripMs`:
 * undefined on a short link, or where the shore keeps its window (or the
 * setting cannot be read: not Linux).
 */
export async function slowStartAdvice(roundTripMs: number): Promise<string | undefined> {
  if (roundTripMs < LONG_ROUND_TRIP_MS) return undefined;
  const restarts = await Deno.readTextFile(SLOW_START_AFTER_IDLE).then(
    (text) => text.trim() === "1",
    () => false,
  );
  if (!restarts) return undefined;
  return `the round trip is ${Math.round(roundTripMs)} ms and this shore restarts TCP's slow ` +
    "start after every pause (net.ipv4.tcp_slow_start_after_idle = 1), so each file after " +
    "one starts slowly: set it to 0 (README: Connections on slow, long and lossy links)";
}
