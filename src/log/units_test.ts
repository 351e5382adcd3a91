import assert from "node:assert/strict";
import { formatBytes, formatDuration, formatRate, plural } from "./units.ts";

Deno.test("formatBytes() keeps about three significant digits in binary units", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.0 KiB");
  assert.equal(formatBytes(46.3 * 1024 * 1024), "46.3 MiB");
  assert.equal(formatBytes(125 * 1024 * 1024), "125 MiB");
  assert.equal(formatBytes(2 ** 30), "1.0 GiB");
  assert.equal(formatRate(131 * 1024 * 1024), "131 MiB/s");
});

Deno.test("formatDuration() reads as seconds, minutes or hours", () => {
  assert.equal(formatDuration(35.4), "35 ms");
  assert.equal(formatDuration(1_000), "1.0 s");
  assert.equal(formatDuration(8_240), "8.2 s");
  assert.equal(formatDuration(42_400), "42 s");
  assert.equal(formatDuration(200_000), "3 min 20 s");
  assert.equal(formatDuration(120_000), "2 min");
  assert.equal(formatDuration(7_500_000), "2 h 5 min");
});

Deno.test("plural() uses the singular for exactly one", () => {
  assert.equal(plural(1, "directory", "directories"), "1 directory");
  assert.equal(plural(2, "directory", "directories"), "2 directories");
  assert.equal(plural(0, "vessel"), "0 vessels");
});
