import assert from "node:assert/strict";
import { formatRuns, medianRun, type ToolRun } from "./runner.ts";

const ran = (seconds: number): ToolRun => ({ seconds, timedOut: false });
const killed = (seconds: number): ToolRun => ({ seconds, timedOut: true });

Deno.test("medianRun takes the middle run, or the mean of the two middle ones", () => {
  assert.equal(medianRun([ran(9), ran(7), ran(8)]).seconds, 8);
  assert.equal(medianRun([ran(9), ran(7), ran(8), ran(30)]).seconds, 8.5);
  assert.equal(formatRuns([ran(9.04), ran(7.26), ran(8.1)]), "8.1 s (7.3-9.0)");
  assert.equal(formatRuns([ran(7.26)]), "7.3 s");
});

Deno.test("medianRun counts a run killed at its deadline as the slowest, and says so", () => {
  const runs = [killed(300), ran(120), killed(300)];
  assert.equal(medianRun(runs).timedOut, true);
  assert.equal(formatRuns(runs), "> 300 s (120.0->300.0)");
  // Not averaged with a deadline: the median of an even count next to one stays a bound.
  assert.equal(medianRun([ran(100), ran(120), killed(300), killed(300)]).timedOut, true);
  assert.equal(medianRun([ran(100), ran(120), ran(130), killed(300)]).seconds, 125);
});

Deno.test("medianRun never hides a failed run behind faster ones", () => {
  const failed: ToolRun = { seconds: 3, timedOut: false, error: "scp exited 1" };
  const runs = [ran(7), failed, ran(8)];
  assert.equal(medianRun(runs), failed);
  assert.equal(formatRuns(runs), "failed (1 of 3)");
});
