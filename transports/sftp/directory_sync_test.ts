import assert from "node:assert/strict";
import { DirectorySyncs, type SyncOptions } from "./directory_sync.ts";

interface Connection {
  readonly name: string;
}

/** Records each request as "connection request dir" and answers only when told. */
function recorder(limits?: SyncOptions) {
  const requests: string[] = [];
  const answers: ((error?: Error) => void)[] = [];
  const request = <T>(line: string, value: T) =>
    new Promise<T>((resolve, reject) => {
      requests.push(line);
      answers.push((error) => error ? reject(error) : resolve(value));
    });
  const syncs = new DirectorySyncs<Connection, string>({
    open: (connection, dir) => request(`${connection.name} open ${dir}`, dir),
    fsync: (connection, handle) => request(`${connection.name} fsync ${handle}`, undefined),
    close: (connection, handle) => request(`${connection.name} close ${handle}`, undefined),
  }, limits);
  const answered = new Set<number>();
  /** Answers the request made `index`-th (0-based), then lets the callbacks run. */
  const answer = async (index: number, error?: Error) => {
    answered.add(index);
    answers[index](error);
    await new Promise((resolve) => setTimeout(resolve, 0));
  };
  /** Answers every request, also those the answers lead to. */
  const answerAll = async () => {
    while (answered.size < answers.length) {
      for (const index of answers.keys()) if (!answered.has(index)) await answer(index);
    }
  };
  return { requests, syncs, answer, answerAll };
}

const a = { name: "a" };
const b = { name: "b" };

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("DirectorySyncs.sync() flushes a directory once for the renames sent before its fsync", async () => {
  const { requests, syncs, answer, answerAll } = recorder();
  const first = syncs.sync(a, "/in");
  const joined = [syncs.sync(a, "/in"), syncs.sync(a, "/in")];
  const otherConnection = syncs.sync(b, "/in");
  const otherDir = syncs.sync(a, "/out");
  assert.deepEqual(requests, ["a open /in", "b open /in", "a open /out"]);
  await answer(0);
  assert.deepEqual(requests.slice(3), ["a fsync /in"]);
  // Renames made while that fsync is out share the next one, sent once it is answered.
  const late = [syncs.sync(a, "/in"), syncs.sync(a, "/in")];
  await turn();
  assert.deepEqual(requests.slice(3), ["a fsync /in"], "one fsync in flight at a time");
  await answer(3);
  const flushed = Promise.all([first, ...joined]).then(() => "flushed");
  const waiting = new Promise((resolve) => setTimeout(() => resolve("still waiting"), 50));
  assert.equal(await Promise.race([flushed, waiting]), "flushed");
  assert.deepEqual(requests.slice(4), ["a fsync /in"], "the late renames' fsync, no new open");
  await answerAll();
  await Promise.all([first, ...joined, otherConnection, otherDir, ...late]);
  assert.equal(requests.filter((line) => line === "a fsync /in").length, 2, "two flushes of /in");
  assert.equal(requests.filter((line) => line.includes("fsync")).length, 4);
  assert.equal(requests.filter((line) => line.includes("close")).length, 0, "kept open");
});

Deno.test("DirectorySyncs.sync() on a long link sends the next fsync behind the one in flight", async () => {
  const { requests, syncs, answer, answerAll } = recorder({ pipelined: () => true });
  const first = syncs.sync(a, "/in");
  await answer(0);
  assert.deepEqual(requests, ["a open /in", "a fsync /in"]);
  // Renames of one turn made while that fsync is out: one more fsync, without its answer.
  const late = [syncs.sync(a, "/in"), syncs.sync(a, "/in")];
  await turn();
  assert.deepEqual(requests.slice(2), ["a fsync /in"], "sent before the first is answered");
  const later = syncs.sync(a, "/in");
  await turn();
  assert.deepEqual(requests.slice(3), ["a fsync /in"], "a later turn's rename gets its own");
  assert.equal(requests.length, 4);
  // Each call waits for an fsync sent after its rename, not for the first one's answer.
  await answer(2);
  const lateFlushed = Promise.all(late).then(() => "flushed");
  const waiting = new Promise((resolve) => setTimeout(() => resolve("still waiting"), 50));
  assert.equal(await Promise.race([lateFlushed, waiting]), "flushed");
  await answerAll();
  await Promise.all([first, later]);
  assert.equal(requests.filter((line) => line.includes("close")).length, 0, "kept open");
});

Deno.test("DirectorySyncs.sync() of a directory kept open sends its fsync with the rename", async () => {
  const { requests, syncs, answerAll } = recorder();
  const first = syncs.sync(a, "/in");
  await answerAll();
  await first;
  assert.deepEqual(requests, ["a open /in", "a fsync /in"]);
  const again = syncs.sync(a, "/in");
  await turn();
  assert.deepEqual(requests.slice(2), ["a fsync /in"], "no open: one round trip");
  await answerAll();
  await again;
});

Deno.test("DirectorySyncs closes a directory left idle, and at once beyond the most kept", async () => {
  const { requests, syncs, answerAll } = recorder({ keepMs: 30, maxKept: 1 });
  const flushes = [syncs.sync(a, "/one"), syncs.sync(a, "/two")];
  await answerAll();
  await Promise.all(flushes);
  // Two kept on `a` with room for one: the first idle is closed now, the other once idle.
  assert.deepEqual(requests.filter((line) => line.includes("close")), ["a close /one"]);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(requests.filter((line) => line.includes("close")), [
    "a close /one",
    "a close /two",
  ]);
  await answerAll();
  const reopened = syncs.sync(a, "/two");
  assert.equal(requests.at(-1), "a open /two", "a closed directory is opened again");
  await answerAll();
  await reopened;
});

Deno.test("DirectorySyncs.sync() rejects the callers of a failed flush; the next call opens again", async () => {
  const { requests, syncs, answer, answerAll } = recorder();
  const outcome = (call: Promise<void>) => call.then(() => undefined, (error: Error) => error);
  const calls = [outcome(syncs.sync(a, "/in")), outcome(syncs.sync(a, "/in"))];
  await answer(0);
  await answer(1, new Error("connection lost"));
  assert.deepEqual(requests, ["a open /in", "a fsync /in", "a close /in"], "closed after all");
  await answer(2);
  for (const call of calls) assert.match(String(await call), /connection lost/);
  const again = syncs.sync(a, "/in");
  assert.equal(requests[3], "a open /in");
  await answerAll();
  await again;

  const failedOpen = outcome(syncs.sync(a, "/gone"));
  await answer(requests.length - 1, new Error("No such file"));
  assert.match(String(await failedOpen), /No such file/);
  const retried = outcome(syncs.sync(a, "/gone"));
  assert.equal(requests.at(-1), "a open /gone", "a failed open is not kept");
  await answer(requests.length - 1, new Error("No such file"));
  assert.match(String(await retried), /No such file/);
});

Deno.test("DirectorySyncs.sync() after a failed fsync that others waited behind opens again", async () => {
  const { requests, syncs, answer, answerAll } = recorder();
  const outcome = (call: Promise<void>) => call.then(() => "flushed", (error: Error) => error);
  const first = outcome(syncs.sync(a, "/in"));
  await answer(0);
  const behind = outcome(syncs.sync(a, "/in")); // its rename left after the first fsync
  await answer(1, new Error("Failure"));
  assert.match(String(await first), /Failure/);
  await turn();
  assert.deepEqual(requests.slice(2).sort(), ["a close /in", "a open /in"]);
  await answerAll();
  assert.equal(await behind, "flushed");
  assert.equal(requests.at(-1), "a fsync /in");
});

Deno.test("DirectorySyncs.sync() of a directory opened ahead sends its fsync at once", async () => {
  const { requests, syncs, answer, answerAll } = recorder();
  syncs.openAhead(a, "/in");
  syncs.openAhead(a, "/in"); // one handle per directory and connection
  assert.deepEqual(requests, ["a open /in"]);
  await answer(0);
  const flushed = syncs.sync(a, "/in"); // the rename was sent: the fsync leaves now
  const joined = syncs.sync(a, "/in");
  await turn();
  assert.deepEqual(requests, ["a open /in", "a fsync /in"]);
  const other = syncs.sync(b, "/in");
  assert.deepEqual(requests.slice(2), ["b open /in"]);
  await answerAll();
  await Promise.all([flushed, joined, other]);
});

Deno.test("DirectorySyncs.sync() opens again when the open ahead failed", async () => {
  const { requests, syncs, answer, answerAll } = recorder();
  syncs.openAhead(a, "/in");
  await answer(0, new Error("No such file"));
  const flushed = syncs.sync(a, "/in");
  await turn();
  assert.deepEqual(requests, ["a open /in", "a open /in"]);
  await answerAll();
  await flushed;
  assert.deepEqual(requests.slice(2), ["a fsync /in"]);
});
