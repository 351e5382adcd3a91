import assert from "node:assert/strict";
import { mebibytes } from "./sizes.ts";

Deno.test("bench sizes of 2 GiB and more are not wrapped to 32 bits", () => {
  assert.equal(mebibytes("size-mib", "4096", 1024), 4 * 1024 ** 3);
  assert.equal(mebibytes("size-mib", "2048", 1024), 2 * 1024 ** 3);
  assert.equal(mebibytes("size-mib", undefined, 1024), 1024 ** 3);
});

Deno.test("bench sizes that are not a whole count of MiB are refused by name", () => {
  assert.throws(() => mebibytes("size-mib", "1.5", 1024), /--size-mib 1\.5/);
  assert.throws(() => mebibytes("fanout-mib", "0", 256), /--fanout-mib 0/);
  assert.throws(() => mebibytes("size-mib", "big", 1024), /whole number of MiB/);
});
