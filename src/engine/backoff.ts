/** Doubling, capped back-off with jitter, so retries neither hammer nor stall. */

/** Back-off limits in milliseconds. */
export interface BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
}

/** The default: 1 s, doubling, capped at 30 s. */
export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, capMs: 30_000 };

/**
 * The wait before try number `attempt + 1` (`attempt` failures so far, from 1):
 * base * 2^(attempt-1), spread by +-20 % so vessels that failed together do
 * not retry together, and capped: the wait never exceeds `capMs`.
 */
export function backoffDelay(
  attempt: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const delay = Math.min(policy.capMs, policy.baseMs * 2 ** exponent);
  return Math.min(policy.capMs, Math.round(delay * (0.8 + 0.4 * random())));
}
