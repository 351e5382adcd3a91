import assert from "node:assert/strict";
import { RateLimit } from "./rate_limit.ts";

Deno.test("RateLimit.take() paces transfers to the configured rate", async () => {
  const limit = new RateLimit(1_000_000);
  const signal = new AbortController().signal;
  const started = performance.now();
  for (let i = 0; i < 4; i++) await limit.take(100_000, signal);
  const elapsed = performance.now() - started;
  // The first take goes at once; the next three wait 100 ms each.
  assert.ok(elapsed >= 280 && elapsed < 1000, `took ${elapsed} ms`);
});

Deno.test("RateLimit.take() rejects at once when aborted", async () => {
  const limit = new RateLimit(1000);
  const controller = new AbortController();
  await limit.take(10_000, controller.signal);
  const waiting = limit.take(10_000, controller.signal);
  controller.abort(new Error("stopping"));
  await assert.rejects(waiting, /stopping/);
});

Deno.test("RateLimit rejects a rate that is not positive", () => {
  assert.throws(() => new RateLimit(0), RangeError);
});
