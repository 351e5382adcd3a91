import assert from "node:assert/strict";
import type { FileRecord } from "../store/store.ts";
import { deliveredLine, progressLine } from "./engine_log.ts";

const GiB = 2 ** 30;
const file: FileRecord = {
  id: 1,
  directory: "outbox",
  relpath: "a/b.bin",
  size: GiB,
  mtimeMs: 0,
  version: 1,
  sha256: null,
};

Deno.test("deliveredLine() tells size, time, rate and resumed parts", () => {
  assert.equal(
    deliveredLine({
      vessel: "v1",
      file,
      durationMs: 8_200,
      bytesSent: GiB - 3 * 10 * 2 ** 20,
      parts: 103,
      partsResumed: 3,
    }),
    "delivered 1.0 GiB in 8.2 s (121 MiB/s), 3 of 103 parts resumed",
  );
  assert.equal(
    deliveredLine({
      vessel: "v1",
      file: { ...file, size: 3 },
      durationMs: 4,
      bytesSent: 3,
      parts: 1,
      partsResumed: 0,
    }),
    "delivered 3 B in 4 ms (750 B/s)",
  );
});

Deno.test("progressLine() tells percentage, bytes, rate and ETA", () => {
  assert.equal(
    progressLine(
      { vessel: "v1", file, startedAt: 0, bytesDone: GiB / 4, bytesSent: GiB / 4 - 2 ** 20 * 16 },
      10_000,
    ),
    "25% (256 MiB of 1.0 GiB) at 24.0 MiB/s, ETA 32 s",
  );
});
