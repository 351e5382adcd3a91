import assert from "node:assert/strict";
import { FlushBatcher } from "./flush_batch.ts";

interface Call {
  readonly dirs: readonly string[];
  readonly on?: string;
  finish(flushed: boolean | Error): void;
}

/** A batcher whose flushes wait until the test finishes them, recording each. */
function recorded(): { batcher: FlushBatcher<string>; calls: Call[] } {
  const calls: Call[] = [];
  const batcher = new FlushBatcher<string>((dirs, on) =>
    new Promise((resolve, reject) => {
      calls.push({
        dirs,
        on,
        finish: (flushed) => flushed instanceof Error ? reject(flushed) : resolve(flushed),
      });
    })
  );
  return { batcher, calls };
}

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("FlushBatcher flushes the files closed in one turn with one flush of their directories", async () => {
  const { batcher, calls } = recorded();
  const flushed = Promise.all([
    batcher.flush("/a/.x-1.tmp", "c1"),
    batcher.flush("/a/.x-2.tmp", "c2"),
    batcher.flush("/b/.x-3.tmp", "c2"),
  ]);
  await turn();
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].dirs, ["/a", "/b"]);
  assert.equal(calls[0].on, "c1");
  calls[0].finish(true);
  assert.deepEqual(await flushed, [true, true, true]);
});

Deno.test("FlushBatcher runs one flush at a time; files closed meanwhile wait for the next", async () => {
  const { batcher, calls } = recorded();
  const first = batcher.flush("/a/.x-1.tmp");
  await turn();
  // The flush running may have started before this file was closed: it must not count.
  let secondDone = false;
  const second = batcher.flush("/a/.x-2.tmp").then((flushed) => {
    secondDone = true;
    return flushed;
  });
  const third = batcher.flush("/a/.x-3.tmp");
  await turn();
  assert.equal(calls.length, 1);
  calls[0].finish(true);
  assert.equal(await first, true);
  await turn();
  await turn();
  assert.equal(secondDone, false);
  assert.equal(calls.length, 2);
  assert.deepEqual(calls[1].dirs, ["/a"]);
  calls[1].finish(false);
  assert.deepEqual(await Promise.all([second, third]), [false, false]);
});

Deno.test("FlushBatcher fails only the files of a flush that failed", async () => {
  const { batcher, calls } = recorded();
  const failed = batcher.flush("/a/.x-1.tmp");
  await turn();
  const later = batcher.flush("/a/.x-2.tmp");
  calls[0].finish(new Error("connection lost"));
  await assert.rejects(failed, /connection lost/);
  await turn();
  calls[1].finish(true);
  assert.equal(await later, true);
});

Deno.test("FlushBatcher takes at most 64 directories per flush", async () => {
  const { batcher, calls } = recorded();
  const flushed = Promise.all(
    Array.from({ length: 70 }, (_, index) => batcher.flush(`/d${index}/.x.tmp`)),
  );
  await turn();
  assert.equal(calls[0].dirs.length, 64);
  calls[0].finish(true);
  await turn();
  await turn();
  assert.equal(calls[1].dirs.length, 6);
  calls[1].finish(true);
  assert.equal((await flushed).length, 70);
});
