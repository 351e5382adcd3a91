/**
 * `deno task bench:link --link PROFILE`: ContentMonster, scp and rsync over
 * an emulated WAN link, in the same run (issue 8). Two network namespaces,
 * "shore" and "vessel", are joined by a userspace link (emulator.ts); a real
 * sshd runs in the vessel namespace; every tool runs in the shore namespace
 * against it. The link is measured before the tools run.
 *
 *   deno task bench:link --link wan|lossy|sat|flaky|all [--cc cubic|bbr|cubic,bbr]
 *     [--client openssh|builtin|openssh,builtin] [--workload large|small|both]
 *     [--timeout 300] [--seed 1] [--runs 1] [--ours-only] [--warm] [--verbose]
 *     [--set KEY=VALUE ...] [--shore-sysctl KEY=VALUE ...]
 *
 * `--runs N` runs every tool N times, in turn (scp, rsync, ContentMonster,
 * scp, ...), and reports each tool's median and range, and ratios of
 * medians: loss is random, and one run moves by 10-30 %.
 * `--ours-only` skips scp and rsync (for tuning; no ratios then); `--verbose`
 * prints ContentMonster's debug log (the connection count's changes among it);
 * `--set Connections=4` gives ContentMonster's vessel a key of settings.ini.
 * `--shore-sysctl net.ipv4.tcp_slow_start_after_idle=0` sets a network sysctl
 * in the shore's namespace only, for every tool (the sender's TCP is the
 * shore's): the tuning the README suggests for long links, measured.
 * `--warm` also times a running daemon that is already connected (see
 * `contentMonsterWarm`): what an operator sees for a file that arrives while
 * it runs, where scp and rsync (and `once`) log in first.
 *
 * Needs root (namespaces, TUN), gcc, python3, sshd, scp and rsync.
 */
import { parseArgs } from "node:util";
import { fileSha256, randomBytes } from "../../cli_harness.ts";
import { startOpenSsh, type TestServer } from "../../servers.ts";
import {
  buildForwarder,
  describeProfile,
  type Emulator,
  type LinkProfile,
  PROFILES,
  queueBytes,
  startEmulator,
  validate,
} from "./emulator.ts";
import {
  type CongestionControl,
  createNamespaces,
  type LinkNamespaces,
  removeNamespaces,
  setSysctl,
} from "./namespaces.ts";
import {
  contentMonster,
  contentMonsterWarm,
  formatRun,
  formatRuns,
  killRunning,
  medianRun,
  rsync,
  scp,
  type ToolRun,
} from "./runner.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    link: { type: "string" },
    cc: { type: "string", default: "cubic" },
    client: { type: "string", default: "openssh,builtin" },
    workload: { type: "string", default: "both" },
    timeout: { type: "string", default: "300" },
    seed: { type: "string", default: "1" },
    runs: { type: "string", default: "1" },
    "ours-only": { type: "boolean", default: false },
    warm: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    set: { type: "string", multiple: true, default: [] },
    "shore-sysctl": { type: "string", multiple: true, default: [] },
  },
});

function say(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

function usage(why: string): never {
  say(
    `${why}\nusage: deno task bench:link --link ${Object.keys(PROFILES).join("|")}|all ` +
      "[--cc cubic|bbr|cubic,bbr] [--client openssh|builtin|openssh,builtin] " +
      "[--workload large|small|both] [--timeout SECONDS] [--seed N] [--runs N] " +
      "[--ours-only] [--warm] [--verbose] [--set KEY=VALUE ...] [--shore-sysctl KEY=VALUE ...]",
  );
  Deno.exit(2);
}

const profiles = values.link === "all"
  ? Object.values(PROFILES)
  : values.link && PROFILES[values.link]
  ? [PROFILES[values.link]]
  : usage(values.link ? `unknown link profile "${values.link}"` : "--link is required");
const ccs = values.cc.split(",") as CongestionControl[];
if (ccs.some((cc) => cc !== "cubic" && cc !== "bbr")) usage(`unknown --cc "${values.cc}"`);
const clients = values.client.split(",");
if (clients.some((client) => client !== "openssh" && client !== "builtin")) {
  usage(`unknown --client "${values.client}"`);
}
const workloads = values.workload === "both" ? ["large", "small"] : [values.workload];
if (workloads.some((w) => w !== "large" && w !== "small")) usage(`unknown --workload`);
/** `--flag KEY=VALUE` settings, in order. */
function keyValues(flag: string, settings: readonly string[]): [string, string][] {
  return settings.map((setting) => {
    const [key, ...value] = setting.split("=");
    if (!key || value.length === 0) usage(`--${flag} needs KEY=VALUE, not "${setting}"`);
    return [key, value.join("=")];
  });
}
const vesselKeys = Object.fromEntries(keyValues("set", values.set));
const shoreSysctls = keyValues("shore-sysctl", values["shore-sysctl"]);
const timeoutSeconds = Number(values.timeout);
const seed = Number(values.seed);
const runCount = Number(values.runs);
if (!Number.isInteger(runCount) || runCount < 1) {
  usage(`--runs needs a count, not "${values.runs}"`);
}
if (Deno.uid?.() !== 0) usage("the WAN bench needs root (network namespaces, TUN devices)");

/** Cleanups of what exists now, run last-in first-out, once. */
const cleanups: (() => Promise<unknown>)[] = [];
async function cleanUp(): Promise<void> {
  await killRunning();
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => {});
}
const onSignal = () => {
  say("\ninterrupted: stopping every tool and removing the namespaces");
  cleanUp().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

interface Row {
  link: string;
  cc: string;
  workload: string;
  /** Each tool's runs, in the order the tools ran. */
  runs: Map<string, ToolRun[]>;
  /** Decimals of the seconds printed. */
  digits: number;
}
const rows: Row[] = [];

/** Writes the workload's files into `dir`; returns name -> sha256. */
async function writeWorkload(
  dir: string,
  profile: LinkProfile,
  workload: string,
): Promise<Map<string, string>> {
  await Deno.mkdir(dir, { recursive: true });
  const files = new Map<string, string>();
  const write = async (name: string, data: Uint8Array) => {
    await Deno.writeFile(`${dir}/${name}`, data);
    files.set(name, (await fileSha256(`${dir}/${name}`))!);
  };
  if (workload === "large") await write("large.bin", randomBytes(profile.largeMiB << 20, seed));
  else {
    for (let i = 0; i < profile.smallFiles; i++) {
      await write(`small-${i}.bin`, randomBytes(64 << 10, seed * 1000 + i));
    }
  }
  return files;
}

/** Marks `run` failed unless `dir` holds every file with its sha256. */
async function verified(run: ToolRun, dir: string, files: Map<string, string>): Promise<ToolRun> {
  if (run.timedOut || run.error) return run;
  for (const [name, sha] of files) {
    if ((await fileSha256(`${dir}/${name}`)) !== sha) {
      return { ...run, error: `"${name}" missing or different at the destination` };
    }
  }
  return run;
}

async function benchLink(
  forwarder: string,
  work: string,
  profile: LinkProfile,
  cc: CongestionControl,
): Promise<void> {
  say(
    `\n=== ${profile.name}: ${describeProfile(profile)}, queue ${queueBytes(profile)} bytes, ` +
      `congestion control ${cc}`,
  );
  const link: LinkNamespaces = await createNamespaces(cc);
  cleanups.push(() => removeNamespaces(link));
  const emulator: Emulator = await startEmulator(forwarder, link, profile, seed);
  cleanups.push(async () =>
    say(`link counters (shore>vessel, vessel>shore):\n${await emulator.stop()}`)
  );
  say(
    `namespaces ${link.shore} (${link.shoreAddress}) and ${link.vessel} (${link.vesselAddress}), ` +
      `forwarder PID ${emulator.pid}, TCP congestion control: ${link.congestionControl}`,
  );
  for (const [key, value] of shoreSysctls) {
    say(`  shore sysctl ${key} = ${await setSysctl(link.shore, key, value)}`);
  }
  const validation = await validate(link, profile);
  for (const line of validation.lines) say(`  ${line}`);
  if (validation.failure) {
    throw new Error(`Cannot bench on "${profile.name}": ${validation.failure}`);
  }

  const server: TestServer = await startOpenSsh({
    netns: { name: link.vessel, address: link.vesselAddress },
  });
  cleanups.push(() => server.stop());
  for (const workload of workloads) {
    // Many small files take about 2 s on wan: tenths would hide a change of one round trip.
    const digits = workload === "small" ? 2 : 1;
    const label = workload === "large"
      ? `1 x ${profile.largeMiB} MiB`
      : `${profile.smallFiles} x 64 KiB`;
    const dir = `${work}/${profile.name}-${cc}-${workload}`;
    const files = await writeWorkload(`${dir}/source`, profile, workload);
    const runs = new Map<string, ToolRun[]>();
    const sources = [...files.keys()].map((name) => `${dir}/source/${name}`);
    const tools: [string, (destination: string, run: number) => Promise<ToolRun>][] = [];
    if (!values["ours-only"]) {
      tools.push(
        ["scp", (destination) => scp(link.shore, server, sources, destination, timeoutSeconds)],
        [
          "rsync",
          (destination) => rsync(link.shore, server, `${dir}/source`, destination, timeoutSeconds),
        ],
      );
    }
    for (const client of clients) {
      const name = `cm-${client}`;
      for (const warm of values.warm ? [false, true] : [false]) {
        const tool = warm ? `${name} warm` : name;
        const slug = tool.replace(" ", "-");
        tools.push([tool, async (destination, run) => {
          const outbox = `${dir}/outbox-${slug}-${run}`;
          await Deno.mkdir(outbox);
          const options = {
            dir: `${dir}/${slug}-${run}`,
            outbox,
            destination,
            extra: { SSHClient: client, ...vesselKeys },
            timeoutSeconds,
            verbose: values.verbose,
          };
          let result: ToolRun;
          if (warm) result = await contentMonsterWarm(link.shore, server, sources, options);
          else {
            for (const file of files.keys()) {
              await Deno.copyFile(`${dir}/source/${file}`, `${outbox}/${file}`);
            }
            result = await contentMonster(link.shore, server, options);
          }
          await Deno.remove(outbox, { recursive: true });
          return result;
        }]);
      }
    }
    // In turn, so that a slow spell of the machine or the link falls on every tool alike.
    for (let run = 0; run < runCount; run++) {
      for (const [name, start] of tools) {
        const destination = `${dir}/vessel-${name.replace(" ", "-")}-${run}`;
        await Deno.mkdir(destination, { recursive: true });
        const result = await verified(await start(destination, run), destination, files);
        await Deno.remove(destination, { recursive: true });
        runs.set(name, [...runs.get(name) ?? [], result]);
        // ContentMonster's retries say how often the link broke a transfer (item 0 of issue 8).
        const retries = name.startsWith("cm-")
          ? (result.stderr?.match(/retrying in/g) ?? []).length
          : undefined;
        const firstRetry = result.stderr?.split("\n").find((line) => line.includes("retrying in"));
        say(
          `  ${label}: ${name}${runCount > 1 ? ` (run ${run + 1} of ${runCount})` : ""} ` +
            formatRun(result, digits) +
            (retries !== undefined ? ` (${retries} retries)` : "") +
            (result.error ? ` (${result.error})` : ""),
        );
        if (firstRetry) say(`    first retry: ${firstRetry.slice(0, 240)}`);
        for (const line of result.stderr?.split("\n") ?? []) {
          if (values.verbose && line.trim()) say(`    ${line}`);
        }
      }
    }
    rows.push({ link: profile.name, cc, workload: label, runs, digits });
  }
  await cleanUpNow();
}

/** Runs the pending cleanups (server, emulator, namespaces) before the next link. */
async function cleanUpNow(): Promise<void> {
  while (cleanups.length > 1) await cleanups.pop()!().catch(() => {});
}

/** Speed of our median run against theirs: > 1 means ContentMonster is faster. */
function ratio(oursRuns: ToolRun[], theirsRuns: ToolRun[] | undefined): string {
  if (!theirsRuns) return "";
  const ours = medianRun(oursRuns);
  const theirs = medianRun(theirsRuns);
  if (ours.error || theirs.error) return "";
  // A timed-out run bounds the ratio from one side.
  const value = theirs.seconds / ours.seconds;
  const prefix = ours.timedOut && theirs.timedOut
    ? "?"
    : ours.timedOut
    ? "< "
    : theirs.timedOut
    ? "> "
    : "";
  return prefix === "?" ? "?" : `${prefix}${value.toFixed(2)}x`;
}

function printTable(): void {
  const header = ["link", "cc", "workload", "scp", "rsync"];
  const ours = clients.flatMap((client) =>
    values.warm ? [`cm-${client}`, `cm-${client} warm`] : [`cm-${client}`]
  );
  for (const tool of ours) header.push(tool, "vs scp", "vs rsync");
  const table = [header];
  for (const row of rows) {
    const runs = row.runs;
    const line = [row.link, row.cc, row.workload];
    for (const tool of ["scp", "rsync"]) {
      line.push(runs.has(tool) ? formatRuns(runs.get(tool)!, row.digits) : "");
    }
    for (const tool of ours) {
      const toolRuns = runs.get(tool);
      line.push(toolRuns ? formatRuns(toolRuns, row.digits) : "");
      line.push(
        toolRuns ? ratio(toolRuns, runs.get("scp")) : "",
        toolRuns ? ratio(toolRuns, runs.get("rsync")) : "",
      );
    }
    table.push(line);
  }
  const widths = header.map((_, i) => Math.max(...table.map((line) => line[i].length)));
  say(
    `\nseconds per tool (same run, same link${
      runCount > 1 ? `; median (range) of ${runCount} runs each, ratios of medians` : ""
    }); ratios are speed: >1 means ContentMonster is faster`,
  );
  for (const line of table) say(line.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
}

const work = await Deno.makeTempDir({ prefix: "cm-wanbench-" });
cleanups.push(() => Deno.remove(work, { recursive: true }));
try {
  const forwarder = await buildForwarder(work);
  for (const profile of profiles) {
    for (const cc of ccs) await benchLink(forwarder, work, profile, cc);
  }
} catch (error) {
  say(`WAN bench failed: ${error instanceof Error ? error.message : error}`);
  Deno.exitCode = 1;
} finally {
  await cleanUp();
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}
printTable();
