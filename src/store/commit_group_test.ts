import assert from "node:assert/strict";
import { CommitGroup, type GroupRunner } from "./commit_group.ts";

/** A runner whose transactions always commit and whose disk flushes the test ends by hand. */
function manualDisk() {
  const flushes: PromiseWithResolvers<void>[] = [];
  const runner: GroupRunner = {
    transaction: (body) => body(),
    isolated: (work) => work(),
    durable: () => {
      const flush = Promise.withResolvers<void>();
      flushes.push(flush);
      return flush.promise;
    },
  };
  return { runner, flushes };
}

/** Whether `promise` has settled by the time the queued callbacks have run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("CommitGroup answers a group only once its commit is on disk", async () => {
  const { runner, flushes } = manualDisk();
  const group = new CommitGroup(runner);
  const first = group.add(() => 1);
  const failing = group.add(() => {
    throw new Error("boom");
  });
  // A move into processed/ waits on this promise: it must not resolve before the flush.
  assert.equal(await settled(first), false);
  assert.equal(flushes.length, 1, "one flush for the group");
  assert.equal(await settled(first), false, "answered before the disk flush ended");
  assert.equal(await settled(failing), false);
  flushes[0].resolve();
  assert.equal(await first, 1);
  await assert.rejects(failing, /boom/);
});

Deno.test("CommitGroup fails every job of a group whose disk flush fails", async () => {
  const { runner, flushes } = manualDisk();
  const group = new CommitGroup(runner);
  const jobs = [group.add(() => "a"), group.add(() => "b")];
  await settled(jobs[0]);
  flushes[0].reject(new Error("EIO"));
  for (const job of jobs) await assert.rejects(job, /EIO/);
});
