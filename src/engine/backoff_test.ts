import assert from "node:assert/strict";
import { backoffDelay, DEFAULT_BACKOFF } from "./backoff.ts";

/** A `random` that puts the jitter factor at exactly 1. */
const middle = () => 0.5;

Deno.test("backoffDelay() doubles from the base after each failure", () => {
  const policy = { baseMs: 100, capMs: 1_000_000 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 10].map((attempt) => backoffDelay(attempt, policy, middle)),
    [100, 200, 400, 800, 1600, 51_200],
  );
  assert.equal(backoffDelay(0, policy, middle), 100, "no failure yet waits the base");
  assert.equal(backoffDelay(-3, policy, middle), 100);
});

Deno.test("backoffDelay() stops growing at the cap", () => {
  const policy = { baseMs: 1000, capMs: 30_000 };
  assert.equal(backoffDelay(5, policy, middle), 16_000);
  assert.equal(backoffDelay(6, policy, middle), 30_000);
  assert.equal(backoffDelay(7, policy, middle), 30_000);
  for (const attempt of [31, 32, 1000, 1e9, Number.MAX_SAFE_INTEGER]) {
    assert.equal(backoffDelay(attempt, policy, middle), 30_000, `attempt ${attempt}`);
  }
});

Deno.test("backoffDelay() uses 1 s doubling to 30 s by default", () => {
  assert.deepEqual(DEFAULT_BACKOFF, { baseMs: 1000, capMs: 30_000 });
  assert.equal(backoffDelay(1, undefined, middle), 1000);
  assert.equal(backoffDelay(3, undefined, middle), 4000);
  assert.equal(backoffDelay(100, undefined, middle), 30_000);
});

Deno.test("backoffDelay() spreads the delay by at most 20 % either way, never above the cap", () => {
  const policy = { baseMs: 1000, capMs: 30_000 };
  assert.equal(backoffDelay(1, policy, () => 0), 800);
  assert.equal(backoffDelay(1, policy, () => 0.25), 900);
  assert.equal(backoffDelay(1, policy, () => 1 - Number.EPSILON), 1200);
  assert.equal(backoffDelay(3, policy, () => 0), 3200);
  assert.equal(backoffDelay(100, policy, () => 0), 24_000);
  assert.equal(backoffDelay(100, policy, () => 1 - Number.EPSILON), 30_000);
  assert.equal(backoffDelay(5, policy, () => 1 - Number.EPSILON), 19_200);
});

Deno.test("backoffDelay() stays within its bounds and varies with Math.random", () => {
  const seen = new Set<number>();
  for (let i = 0; i < 500; i++) {
    const delay = backoffDelay(2);
    assert.ok(Number.isInteger(delay));
    assert.ok(delay >= 1600 && delay <= 2400, `${delay} out of [1600, 2400]`);
    seen.add(delay);
  }
  assert.ok(seen.size > 10, "the jitter spreads the retries");
});
