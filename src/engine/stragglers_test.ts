import assert from "node:assert/strict";
import { COPY_AFTER_MS, Stragglers } from "./stragglers.ts";

Deno.test("Stragglers names the part under way longest, past 1.5 medians and COPY_AFTER_MS, once", () => {
  const parts = new Stragglers();
  for (const index of [0, 1, 2, 3, 4]) parts.started(index, 0);
  assert.equal(parts.next(10_000), undefined, "no part whole yet: nothing to compare with");
  parts.whole(1, 1000);
  parts.whole(2, 1200);
  parts.whole(3, 1400); // median 1200 ms
  assert.equal(parts.next(1800), undefined, "1.5 medians not passed");
  parts.started(5, 1500);
  assert.equal(parts.next(1801), 0, "the oldest of those under way");
  assert.equal(parts.next(1802), 4);
  assert.equal(parts.next(4000), 5);
  assert.equal(parts.next(9000), undefined, "each part once");
  parts.whole(0, 9000);
  parts.whole(0, 9001); // its copy ended too: counted once
});

Deno.test("Stragglers copies nothing that has been under way less than COPY_AFTER_MS", () => {
  const parts = new Stragglers();
  parts.started(0, 0);
  parts.started(1, 0);
  parts.whole(0, 1);
  assert.equal(parts.next(COPY_AFTER_MS), undefined);
  assert.equal(parts.next(COPY_AFTER_MS + 1), 1);
});
