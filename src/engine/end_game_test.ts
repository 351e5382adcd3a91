import assert from "node:assert/strict";
import { EndGame, OVERDUE_FACTOR, OVERDUE_MIN_MS } from "./end_game.ts";

/** Four parts started at 0; parts 0 and 1 whole at `wholeAt` each. */
function halfWhole(wholeAt: [number, number]): EndGame {
  const game = new EndGame(4);
  for (let index = 0; index < 4; index++) game.started(index, 0);
  game.whole(0, wholeAt[0]);
  game.whole(1, wholeAt[1]);
  return game;
}

Deno.test("EndGame: no part is overdue before half the parts are whole", () => {
  const game = new EndGame(4);
  for (let index = 0; index < 4; index++) game.started(index, 0);
  game.whole(0, 2_000);
  // The first part whole is the fast one: the others are not late behind it yet.
  assert.deepEqual(game.overdue(60_000), []);
  assert.equal(game.nextDueIn(60_000), Infinity);
  game.whole(1, 3_000);
  assert.deepEqual(game.overdue(60_000), [2, 3]);
});

Deno.test("EndGame: the oldest part is overdue after the median time of the parts whole, times the factor", () => {
  const game = halfWhole([2_000, 4_000]);
  // Median of [2 s, 4 s] (the upper one): 4 s.
  const after = OVERDUE_FACTOR * 4_000;
  assert.deepEqual(game.overdue(after - 1), []);
  assert.equal(game.nextDueIn(after - 1), 1);
  assert.deepEqual(game.overdue(after), [2, 3]);
});

Deno.test("EndGame: a part is never overdue sooner than the floor, however fast the others", () => {
  const game = halfWhole([10, 20]);
  assert.deepEqual(game.overdue(OVERDUE_MIN_MS - 1), []);
  assert.deepEqual(game.overdue(OVERDUE_MIN_MS), [2, 3]);
});

Deno.test("EndGame: one spare per part; one that could not start may go again while the first copy runs", () => {
  const game = new EndGame(4);
  for (let index = 0; index < 4; index++) game.started(index, index);
  game.whole(0, 10);
  game.whole(1, 20);
  const now = 10_000;
  assert.deepEqual(game.overdue(now), [2, 3], "the longest in flight first");
  game.spared(2);
  game.spared(3);
  assert.deepEqual(game.overdue(now), [], "every part in flight has its spare");
  game.unspared(3); // no idle connection after all
  assert.deepEqual(game.overdue(now), [3]);
  game.ended(3); // its first copy ended (failed): nothing to race
  game.unspared(3);
  assert.deepEqual(game.overdue(now), []);
});

Deno.test("EndGame: a part made whole by its spare takes its first copy's time", () => {
  const game = halfWhole([1_000, 1_000]);
  game.spared(2);
  game.whole(2, 9_000); // by the spare, 9 s after the first copy started
  game.ended(2); // the first copy ends later: nothing changes
  // Median of [1 s, 1 s, 9 s]: 1 s, so 1.5 s.
  assert.deepEqual(game.overdue(1_499), []);
  assert.deepEqual(game.overdue(1_500), [3]);
});
