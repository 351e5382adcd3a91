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
