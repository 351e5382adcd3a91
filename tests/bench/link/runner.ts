/**
 * Runs the bench's tools inside the shore namespace with a deadline each:
 * ContentMonster (`once`, or a running daemon: `contentMonsterWarm`), scp
 * and rsync. A run past its deadline is killed with every process it
 * started, by PID, and reported as `> N s`; so is every run still going
 * when the bench is interrupted.
 */
import { MAIN, PERMISSIONS as CLI_PERMISSIONS, V8_FLAGS } from "../../cli_harness.ts";
import { descendantsOf, sshClientOptions, type TestServer } from "../../servers.ts";
import { vesselIni } from "../../vessel_ini.ts";

/** How one tool did. */
export interface ToolRun {
  readonly seconds: number;
  /** Set when the run was killed at its deadline. */
  readonly timedOut: boolean;
  /** Why the run failed (exit status and the end of its stderr). */
  readonly error?: string;
  /** What the tool wrote to stderr (its last 64 KiB). */
  readonly stderr?: string;
}

/** `12.3 s` (to `digits` decimals), `> 300 s`, or `failed`. */
export function formatRun(run: ToolRun, digits = 1): string {
  if (run.timedOut) return `> ${run.seconds.toFixed(0)} s`;
  if (run.error) return "failed";
  return `${run.seconds.toFixed(digits)} s`;
}

/**
 * The median of several runs of one tool (a run killed at its deadline
 * counts as its deadline, so it sorts last), or the first failed run: a
 * failure is never hidden behind a median.
 */
export function medianRun(runs: readonly ToolRun[]): ToolRun {
  if (runs.length === 0) throw new RangeError("no runs to take the median of");
  const failed = runs.find((run) => run.error && !run.timedOut);
  if (failed) return failed;
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  const middle = sorted.length >> 1;
  if (sorted.length % 2 === 1 || sorted[middle - 1].timedOut || sorted[middle].timedOut) {
    return sorted[middle];
  }
  return { ...sorted[middle], seconds: (sorted[middle - 1].seconds + sorted[middle].seconds) / 2 };
}

/** One run as {@linkcode formatRun}; several as their median and range: `7.3 s (7.1-8.4)`. */
export function formatRuns(runs: readonly ToolRun[], digits = 1): string {
  const median = medianRun(runs);
  if (runs.length === 1 || median.error) {
    const failures = runs.filter((run) => run.error && !run.timedOut).length;
    return runs.length === 1 ? formatRun(median, digits) : `failed (${failures} of ${runs.length})`;
  }
  const seconds = runs.map((run) => run.seconds);
  const longest = runs.some((run) => run.timedOut) ? ">" : "";
  const range = `${Math.min(...seconds).toFixed(digits)}-${longest}${
    Math.max(...seconds).toFixed(digits)
  }`;
  return `${formatRun(median, digits)} (${range})`;
}

const PERMISSIONS = [V8_FLAGS, ...CLI_PERMISSIONS];

const running = new Set<number>();

/** Counts `pid` among the runs {@linkcode killRunning} stops; returns the call that forgets it. */
export function track(pid: number): () => void {
  running.add(pid);
  return () => running.delete(pid);
}

/** Kills every run still going, and what it started. */
export async function killRunning(): Promise<void> {
  for (const pid of running) await killTree(pid);
}

async function killTree(root: number): Promise<void> {
  for (const pid of [root, ...await descendantsOf(root)]) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Exited meanwhile.
    }
  }
}

/** Runs `argv` in network namespace `ns`, killed after `timeoutSeconds`. */
export async function runIn(
  ns: string,
  argv: string[],
  timeoutSeconds: number,
): Promise<ToolRun> {
  const started = performance.now();
  // `ip netns exec` execs the command: the child's PID is the tool's.
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...argv],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  running.add(child.pid);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killTree(child.pid);
  }, timeoutSeconds * 1000);
  const stderr = new Response(child.stderr).text();
  const status = await child.status;
  clearTimeout(timer);
  running.delete(child.pid);
  const seconds = timedOut ? timeoutSeconds : (performance.now() - started) / 1000;
  const text = (await stderr).slice(-65536);
  if (timedOut || status.success) return { seconds, timedOut, stderr: text };
  const tail = text.trim().split("\n").slice(-3).join(" | ");
  return { seconds, timedOut, error: `${argv[0]} exited ${status.code}: ${tail}`, stderr: text };
}

/** scp of `sources` into the vessel's directory `target` (one connection). */
export function scp(
  ns: string,
  server: TestServer,
  sources: string[],
  target: string,
  timeoutSeconds: number,
): Promise<ToolRun> {
  const argv = ["scp", "-q", "-P", String(server.port), ...sshClientOptions(server), ...sources];
  return runIn(ns, [...argv, `root@${server.host}:${target}/`], timeoutSeconds);
}

/** rsync over ssh of the directory `source` into the vessel's directory `target`. */
export function rsync(
  ns: string,
  server: TestServer,
  source: string,
  target: string,
  timeoutSeconds: number,
): Promise<ToolRun> {
  const ssh = ["ssh", "-p", String(server.port), ...sshClientOptions(server)].join(" ");
  const argv = ["rsync", "-a", "-e", ssh, `${source}/`, `root@${server.host}:${target}/`];
  return runIn(ns, argv, timeoutSeconds);
}

/** Where a ContentMonster run keeps its config and state, and what it replicates. */
interface ContentMonsterRun {
  dir: string;
  outbox: string;
  destination: string;
  extra: Record<string, string>;
  timeoutSeconds: number;
  /** Logs debug lines too (the connection count's changes among them). */
  verbose?: boolean;
}

/** Writes the run's settings.ini (state database beside it); returns its path. */
async function writeConfig(server: TestServer, options: ContentMonsterRun): Promise<string> {
  await Deno.mkdir(options.dir, { recursive: true });
  const config = `${options.dir}/settings.ini`;
  await Deno.writeTextFile(
    config,
    `[MONSTER]\nDatabase = ${options.dir}/state.db\n\n[Directory bench]\nLocation = ${options.outbox}\n` +
      `Destination = ${options.destination}\n\n${vesselIni(server, "v", options.extra)}`,
  );
  return config;
}

/** `contentmonster COMMAND --config CONFIG`, run from source as the bench's other runs. */
function cliArgv(command: string, config: string, options: ContentMonsterRun): string[] {
  return [
    Deno.execPath(),
    "run",
    ...PERMISSIONS,
    MAIN,
    command,
    "--config",
    config,
    ...(options.verbose ? ["--verbose"] : []),
  ];
}

/**
 * `contentmonster once` from `outbox` to the vessel's `destination`, with a
 * config written to `dir` (state database beside it, default settings but
 * for `extra` vessel keys such as `SSHClient`).
 */
export async function contentMonster(
  ns: string,
  server: TestServer,
  options: ContentMonsterRun,
): Promise<ToolRun> {
  const config = await writeConfig(server, options);
  // `--timeout` lets it exit cleanly first; the deadline kills it 15 s later.
  const argv = [...cliArgv("once", config, options), "--timeout", String(options.timeoutSeconds)];
  const run = await runIn(ns, argv, options.timeoutSeconds + 15);
  // `once` exits 1 at its own --timeout: the same outcome as the deadline.
  if (run.error && run.seconds >= options.timeoutSeconds) {
    return { seconds: options.timeoutSeconds, timedOut: true, stderr: run.stderr };
  }
  return run;
}

/** The pause between the first delivery and the measured one: longer than an RTO, as between files. */
const WARM_PAUSE_MS = 3000;

/**
 * ContentMonster as an operator runs it: a daemon (`run`) that is up and
 * connected when files arrive. It first delivers `sources` under `warmup/`
 * (its connections open as for any busy link), pauses, and then gets them
 * again under their own names; the run's time is from the first of those
 * appearing in `outbox` (renamed in, an old mtime so the watcher takes them at
 * once) to the last one in processed/. scp and rsync log in for every
 * transfer; a running daemon does not. The pause lets TCP restart slow start
 * on the idle connections, as between real files.
 */
export async function contentMonsterWarm(
  ns: string,
  server: TestServer,
  sources: readonly string[],
  options: ContentMonsterRun,
): Promise<ToolRun> {
  const config = await writeConfig(server, options);
  const staging = `${options.dir}/staging`;
  await Deno.mkdir(staging, { recursive: true });
  await Deno.mkdir(`${options.outbox}/warmup`, { recursive: true });
  const names = sources.map((source) => source.slice(source.lastIndexOf("/") + 1));
  const daemon = new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...cliArgv("run", config, options)],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const forget = track(daemon.pid);
  const stderr = new Response(daemon.stderr).text();
  const deliver = async (into: string): Promise<number | undefined> => {
    for (const [i, source] of sources.entries()) {
      await Deno.copyFile(source, `${staging}/${names[i]}`);
      const old = new Date(Date.now() - 60_000);
      await Deno.utime(`${staging}/${names[i]}`, old, old);
    }
    const started = performance.now();
    for (const name of names) await Deno.rename(`${staging}/${name}`, `${into}/${name}`);
    const processed = `${options.outbox}/processed${into.slice(options.outbox.length)}`;
    // One listing per look, not a stat per file: the looking shares the shore's CPU with
    // the daemon it times.
    while (!names.every(await namesIn(processed))) {
      if (performance.now() - started > options.timeoutSeconds * 1000) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return (performance.now() - started) / 1000;
  };
  let seconds: number | undefined;
  let error: string | undefined;
  try {
    if ((await deliver(`${options.outbox}/warmup`)) === undefined) {
      error = "the first delivery, which brings the connections up, did not finish";
    } else {
      await new Promise((resolve) => setTimeout(resolve, WARM_PAUSE_MS));
      seconds = await deliver(options.outbox);
    }
  } finally {
    daemon.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      daemon.status.then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 15_000)),
    ]);
    clearTimeout(timer);
    if (!stopped) await killTree(daemon.pid);
    await daemon.status;
    forget();
  }
  const text = (await stderr).slice(-65536);
  if (error) return { seconds: options.timeoutSeconds, timedOut: false, error, stderr: text };
  if (seconds === undefined) {
    return { seconds: options.timeoutSeconds, timedOut: true, stderr: text };
  }
  return { seconds, timedOut: false, stderr: text };
}

/** Tells whether a name is in `dir` now (none while `dir` does not exist). */
async function namesIn(dir: string): Promise<(name: string) => boolean> {
  const found = new Set<string>();
  try {
    for await (const entry of Deno.readDir(dir)) found.add(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return (name) => found.has(name);
}
