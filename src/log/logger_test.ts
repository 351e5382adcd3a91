import assert from "node:assert/strict";

const LOGGER = new URL("./logger.ts", import.meta.url).href;

/** Runs `body` in a new Deno with the logger imported as `log`; returns its stderr lines. */
async function stderrOf(body: string): Promise<string[]> {
  const script = `import * as log from ${JSON.stringify(LOGGER)};\n${body}`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    env: { CONTENTMONSTER_LOG: "info" },
    stdout: "null",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(output.stderr).split("\n").filter(Boolean);
}

Deno.test("log lines of one turn are written together, in order, by the end of the turn", async () => {
  const lines = await stderrOf(`
    log.log("info", "a", "first");
    log.log("debug", "a", "not at this level");
    log.log("info", "", "second\\nline");
    await new Promise((resolve) => setTimeout(resolve, 10));
    log.log("info", "b", "third");
    log.flushLog();
    Deno.exit(0);
  `);
  assert.deepEqual(lines.map((line) => line.replace(/^\S+ /, "")), [
    "INFO  a: first",
    "INFO  second\\nline",
    "INFO  b: third",
  ]);
});

Deno.test("an error is written at once, with the lines before it, even if the process dies in that turn", async () => {
  const lines = await stderrOf(`
    log.log("info", "a", "what led here");
    log.log("error", "a", "the last words");
    Deno.kill(Deno.pid, "SIGKILL");
  `);
  assert.deepEqual(lines.map((line) => line.replace(/^\S+ /, "")), [
    "INFO  a: what led here",
    "ERROR a: the last words",
  ]);
});
