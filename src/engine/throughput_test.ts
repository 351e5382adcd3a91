import assert from "node:assert/strict";
import { Throughput } from "./throughput.ts";

Deno.test("Throughput.total() sums the bytes of the last window and forgets older ones", () => {
  const window = new Throughput(60_000, 1_000);
  window.add(100, 1_000);
  window.add(50, 1_500);
  window.add(7, 30_000);
  assert.equal(window.total(30_000), 157);
  assert.equal(window.total(60_999), 157, "1 s bucket still inside the minute");
  assert.equal(window.total(61_000), 7, "the first second has left the window");
  window.add(1, 61_000); // reuses the slot of second 1
  assert.equal(window.total(61_000), 8);
  assert.equal(window.total(200_000), 0);
});

Deno.test("Throughput.rate() averages over the minute, or since traffic began when later", () => {
  const window = new Throughput(60_000, 1_000);
  assert.equal(window.rate(5_000), 0);
  window.add(10_000, 100_000);
  window.add(10_000, 109_500);
  assert.equal(window.rate(110_000), 2_000, "20 000 bytes over the 10 s since the first");
  assert.equal(window.rate(100_200), 10_000, "at least one second");
  assert.equal(window.rate(159_999), 20_000 / 59.999);
  assert.equal(window.rate(165_000), 10_000 / 56, "the first second left the window");
});
