/**
 * `deno task test`: every suite, in two lanes at once. Most of the time of
 * the suites that mostly wait (a vessel down for a minute, a link throttled
 * to 128 KiB/s) is spent asleep, so they run beside the others instead of
 * after them; the run took 9 to 10 minutes with them in line, close to the
 * 10 allowed. The other suites stay in one line: many of them time what a
 * real server does, and two of those at once on two cores would time each
 * other.
 *
 * The main lane writes as it goes; the waiting lane's output follows when
 * both are done. Arguments go to every `deno test` (`--filter NAME`).
 *
 * @module
 */

/**
 * The suites that mostly wait, run beside the others: on a vessel down for a
 * minute, a throttled link, back-off between cut tries, 400 ms round trips,
 * or a Timeout running out.
 */
const WAITING = [
  "tests/faults_refusal_test.ts",
  "tests/faults_slow_link_test.ts",
  "tests/faults_narrowband_test.ts",
  "tests/faults_short_cuts_test.ts",
  "transports/sftp/round_trips_test.ts",
  "transports/sftp/connection_test.ts",
];
/** The SFTP suites run a second time, over the builtin client. */
const BUILTIN = [
  "transports/sftp/sftp_transport_test.ts",
  "tests/e2e_sftp_test.ts",
  "tests/e2e_recovery_test.ts",
];

interface Run {
  readonly args: readonly string[];
  readonly env?: Record<string, string>;
}

const extra = Deno.args;
const children = new Set<Deno.ChildProcess>();

function start(run: Run, output: "inherit" | "piped"): Deno.ChildProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", ...run.args, ...extra],
    env: run.env,
    stdin: "null",
    stdout: output,
    stderr: output,
  }).spawn();
  children.add(child);
  child.status.finally(() => children.delete(child));
  return child;
}

/** Runs `runs` one after the other, writing as they go; resolves to the first failure's code. */
async function mainLane(runs: readonly Run[]): Promise<number> {
  let failed = 0;
  for (const run of runs) {
    const { code } = await start(run, "inherit").status;
    failed ||= code;
  }
  return failed;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => {
    for (const child of children) child.kill(signal);
  });
}

// Type-checked once, by the main lane's first run. The waiting lane's output is kept for the end.
const waiting = start({ args: ["--no-check", ...WAITING] }, "piped").output();
const mainCode = await mainLane([
  { args: [`--ignore=${WAITING.join(",")}`] },
  { args: ["--no-check", ...BUILTIN], env: { CONTENTMONSTER_TEST_SSH_CLIENT: "builtin" } },
]);
const beside = await waiting;
writeOut(new TextEncoder().encode(`\n--- beside the others: ${WAITING.join(", ")}\n`));
writeOut(beside.stdout);
writeOut(beside.stderr);
Deno.exit(mainCode || beside.code);

function writeOut(bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
}
