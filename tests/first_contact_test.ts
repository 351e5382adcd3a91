/**
 * A fresh clone's first commands print only our own lines: no warning about
 * the build scripts of ssh2 and cpu-features (their native addons cannot
 * load in Deno, so deno.json declares them unwanted).
 */
import assert from "node:assert/strict";
import { decoded, type ShellResult } from "./cli_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function deno(args: string[]): Promise<ShellResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return decoded(output);
}

Deno.test("deno install --frozen and deno task start warn about no build scripts", async () => {
  const install = await deno(["install", "--frozen"]);
  assert.equal(install.code, 0, install.stderr);
  assert.doesNotMatch(install.stderr + install.stdout, /Ignored build scripts|Warning/);

  const start = await deno(["task", "start", "--version"]);
  assert.equal(start.code, 0, start.stderr);
  assert.match(start.stdout, /^contentmonster \d+\.\d+\.\d+\n$/);
  const lines = start.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, start.stderr);
  assert.match(lines[0], /^Task start deno run /);
});
