import assert from "node:assert/strict";
import { PartWindow } from "./part_window.ts";

const signal = new AbortController().signal;

Deno.test("PartWindow lets `max` parts in at once and the next one when a place is released", async () => {
  const window = new PartWindow(2);
  const tickets = [await window.acquire(signal), await window.acquire(signal)];
  let third = false;
  const waiting = window.acquire(signal).then(() => third = true);
  await Promise.resolve();
  assert.equal(third, false);
  window.release(tickets[0], "whole");
  await waiting;
  assert.equal(third, true);
});

Deno.test("PartWindow gives a released place to the earliest waiter, not to a newcomer", async () => {
  // Uploads ask again right after releasing: the parts queued before theirs must go first,
  // or the vessel's in-order assembly waits for them at the end.
  const window = new PartWindow(2);
  const held = [await window.acquire(signal), await window.acquire(signal)];
  const order: string[] = [];
  const early = window.acquire(signal).then((ticket) => (order.push("early"), ticket));
  window.release(held[0], "whole");
  const late = window.acquire(signal).then((ticket) => (order.push("late"), ticket));
  window.release(await early, "whole");
  window.release(held[1], "whole");
  await late;
  assert.deepEqual(order, ["early", "late"]);
  assert.equal(window.inFlight, 1);
});

Deno.test("PartWindow lets the next part in once a part's bytes have left, and keeps its place", async () => {
  const window = new PartWindow(2);
  window.maxBytes = 10;
  const first = await window.acquire(signal, 8);
  let second: unknown;
  const waiting = window.acquire(signal, 8).then((ticket) => second = ticket);
  await Promise.resolve();
  assert.equal(second, undefined, "the bytes do not fit");
  window.partEnding(first);
  window.partEnding(first); // Twice gives back once.
  await waiting;
  assert.equal(window.inFlight, 2, "the first still holds its place");
  let third: unknown;
  const last = window.acquire(signal, 2).then((ticket) => third = ticket);
  await Promise.resolve();
  assert.equal(third, undefined, "no place left");
  window.release(first, "whole");
  await last;
  // 8 + 2 fit: the first's bytes were not given back a second time at its release.
  let fourth: unknown;
  window.acquire(signal, 1).then((ticket) => fourth = ticket);
  await Promise.resolve();
  assert.equal(fourth, undefined, "two in flight holding 10 bytes");
});

Deno.test("PartWindow halves once per loss, even when the loss fails many parts", async () => {
  const window = new PartWindow(16);
  const tickets = await Promise.all(Array.from({ length: 8 }, () => window.acquire(signal)));
  for (const ticket of tickets) window.release(ticket, "lost");
  assert.equal(window.limit, 8);
  window.release(await window.acquire(signal), "lost");
  assert.equal(window.limit, 4);
  for (let i = 0; i < 5; i++) window.release(await window.acquire(signal), "lost");
  assert.equal(window.limit, 1, "never below one");
});

Deno.test("PartWindow grows by one after `limit` whole parts, up to `max`", async () => {
  const window = new PartWindow(3);
  window.release(await window.acquire(signal), "lost");
  assert.equal(window.limit, 1);
  window.release(await window.acquire(signal), "whole");
  assert.equal(window.limit, 2);
  window.release(await window.acquire(signal), "whole");
  assert.equal(window.limit, 2);
  window.release(await window.acquire(signal), "whole");
  assert.equal(window.limit, 3);
  for (let i = 0; i < 10; i++) window.release(await window.acquire(signal), "whole");
  assert.equal(window.limit, 3);
});

Deno.test("PartWindow ignores failures that are not losses of the connection", async () => {
  const window = new PartWindow(4);
  window.release(await window.acquire(signal), "failed");
  assert.equal(window.limit, 4);
});

Deno.test("PartWindow.acquire() rejects when its signal aborts while waiting", async () => {
  const window = new PartWindow(1);
  await window.acquire(signal);
  const stop = new AbortController();
  const waiting = window.acquire(stop.signal);
  stop.abort(new Error("stopping"));
  await assert.rejects(waiting, /stopping/);
});

Deno.test("PartWindow rejects a maximum below one", () => {
  assert.throws(() => new PartWindow(0), RangeError);
  assert.throws(() => new PartWindow(0), /"0" parts/);
});

Deno.test("PartWindow lets fewer large parts in when a byte budget is set, and one whatever its size", async () => {
  const window = new PartWindow(8);
  window.maxBytes = 24;
  const big = [await window.acquire(signal, 10), await window.acquire(signal, 10)];
  let third = false;
  const waiting = window.acquire(signal, 10).then((ticket) => {
    third = true;
    return ticket;
  });
  await Promise.resolve();
  assert.equal(third, false, "a third 10-byte part would pass 24 bytes");
  window.release(big[0], "whole");
  window.release(await waiting, "whole");
  window.release(big[1], "whole");
  assert.equal(window.inFlight, 0);
  // A part larger than the budget still goes, alone.
  const huge = await window.acquire(signal, 100);
  assert.equal(window.inFlight, 1);
  window.release(huge, "whole");
  // Small parts are held by the part count only.
  const small = await Promise.all(Array.from({ length: 8 }, () => window.acquire(signal, 1)));
  assert.equal(window.inFlight, 8);
  for (const ticket of small) window.release(ticket, "whole");
});
