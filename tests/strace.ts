/** Tracing a Deno script's system calls, for tests of what reaches the disk and in what order. */

/** Where tests expect strace (`.ci/run` installs it). */
export const STRACE = "/usr/bin/strace";

/** Why strace cannot run here, or `undefined`. */
export const straceMissing: string | undefined = await Deno.stat(STRACE).then(
  () => undefined,
  () => `${STRACE} is missing`,
);

/**
 * Runs `script` with `deno eval` under `strace -f` tracing `syscalls`, and
 * returns its exit code and the lines of its stderr, which strace shares.
 */
export async function traceScript(
  script: string,
  syscalls: readonly string[],
  straceOptions: readonly string[] = [],
): Promise<{ code: number; lines: string[] }> {
  const output = await new Deno.Command(STRACE, {
    args: [
      "-f",
      "-qq",
      ...straceOptions,
      "-e",
      `trace=${syscalls.join(",")}`,
      Deno.execPath(),
      "eval",
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: output.code, lines: new TextDecoder().decode(output.stderr).split("\n") };
}
