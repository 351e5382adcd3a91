/**
 * `deno task bench`: ContentMonster next to scp and rsync, measured in the same
 * run against real OpenSSH servers on loopback. Prints each figure, the
 * reference it is compared with, and the ratio.
 *
 *   deno task bench [--size-mib 1024] [--files 1000] [--fanout-mib 256] [--quick]
 *                   [--only big|small|fanout|latency] [--client openssh|builtin]
 *                   [--set KEY=VALUE ...] [--runs 3]
 *
 * `--runs N` runs each tool of the small-files scenario N times, taking
 * turns, and compares medians.
 *
 * `--set Fsync=no` gives ContentMonster's vessels a key of settings.ini, to
 * measure what one setting costs.
 */
import { parseArgs } from "node:util";
import {
  MAIN,
  PERMISSIONS as CLI_PERMISSIONS,
  randomBytes,
  sha256,
  V8_FLAGS,
} from "../cli_harness.ts";
import { sshClientOptions, startOpenSsh, type TestServer } from "../servers.ts";
import { vesselIni } from "../vessel_ini.ts";
import { mebibytes } from "./sizes.ts";
import { formatRuns, medianRun, type ToolRun } from "./link/runner.ts";

const PERMISSIONS = [V8_FLAGS, ...CLI_PERMISSIONS];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string" },
    files: { type: "string" },
    "fanout-mib": { type: "string" },
    quick: { type: "boolean" },
    /** One scenario only, e.g. `--only small` while working on small files. */
    only: { type: "string" },
    /** One SSH carrier only. */
    client: { type: "string" },
    set: { type: "string", multiple: true, default: [] },
    /** Runs of each tool in the small-files scenario (default 3, 1 with --quick). */
    runs: { type: "string" },
  },
});
const vesselKeys: Record<string, string> = {};
for (const setting of values.set) {
  const [key, ...value] = setting.split("=");
  if (!key || value.length === 0) throw new TypeError(`--set needs KEY=VALUE, not "${setting}"`);
  vesselKeys[key] = value.join("=");
}
const quick = values.quick ?? false;
/** Both SSH carriers run in the same run as scp and rsync, unless `--client` names one. */
const CARRIERS = (["openssh", "builtin"] as const).filter((carrier) =>
  values.client === undefined || values.client === carrier
);
if (CARRIERS.length === 0) throw new TypeError(`--client ${values.client}: openssh or builtin`);
const SCENARIOS = ["big", "small", "fanout", "latency"];
if (values.only !== undefined && !SCENARIOS.includes(values.only)) {
  throw new TypeError(`--only ${values.only}: one of ${SCENARIOS.join(", ")}`);
}
const runs = (scenario: string) => values.only === undefined || values.only === scenario;
const sizeBytes = mebibytes("size-mib", values["size-mib"], quick ? 128 : 1024);
const sizeMiB = sizeBytes / 1024 / 1024;
const fileCount = Number(values.files ?? (quick ? 200 : 1000));
const smallRuns = Number(values.runs ?? (quick ? 1 : 3));
if (!(Number.isSafeInteger(smallRuns) && smallRuns >= 1)) {
  throw new TypeError(`--runs ${values.runs}: a whole number of runs, 1 or more`);
}
const fanoutBytes = mebibytes("fanout-mib", values["fanout-mib"], quick ? 64 : 256);
const fanoutMiB = fanoutBytes / 1024 / 1024;

interface Row {
  scenario: string;
  ours: string;
  reference: string;
  ratio: string;
  target: string;
}
const rows: Row[] = [];

function report(text: string) {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

async function run(command: string, args: string[], env?: Record<string, string>) {
  const output = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(
      `${command} ${args.join(" ")} failed (${output.code}): ${
        new TextDecoder().decode(output.stderr)
      }`,
    );
  }
}

/**
 * CPU seconds used by this process's finished children and theirs (cutime +
 * cstime of /proc/self/stat: every level waits for its children, so scp's
 * ssh and ContentMonster's ssh processes count too).
 */
function childCpuSeconds(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 16 and 17 of proc(5), counted from 1 with pid and comm before the slice.
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
}

/** Seconds and CPU seconds (all descendants) of `work`. */
async function timedWithCpu(
  work: () => Promise<unknown>,
): Promise<{ seconds: number; cpu: number }> {
  const cpu = childCpuSeconds();
  const seconds = await timed(work);
  return { seconds, cpu: childCpuSeconds() - cpu };
}

function scp(server: TestServer, source: string, target: string) {
  return run("scp", [
    "-q",
    "-P",
    String(server.port),
    ...sshClientOptions(server),
    source,
    `root@127.0.0.1:${target}`,
  ]);
}

/** Runs `contentmonster once` and returns seconds and peak RSS in MiB. */
async function contentMonsterOnce(
  config: string,
): Promise<{ seconds: number; peakMiB: number; cpu: number }> {
  const cpuBefore = childCpuSeconds();
  const start = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, "once", "--config", config],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let peakKiB = 0;
  const poll = setInterval(() => {
    try {
      const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      const match = /VmHWM:\s+(\d+) kB/.exec(status);
      if (match) peakKiB = Math.max(peakKiB, Number(match[1]));
    } catch { /* exited */ }
  }, 50);
  const output = await child.output();
  clearInterval(poll);
  const seconds = (performance.now() - start) / 1000;
  if (!output.success) {
    throw new Error(`contentmonster once failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return { seconds, peakMiB: peakKiB / 1024, cpu: childCpuSeconds() - cpuBefore };
}

async function writeRandomFile(path: string, bytes: number): Promise<string> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const { createHash } = await import("node:crypto");
  const hash = createHash("sha256");
  const block = randomBytes(8 << 20, bytes % 997 + 3);
  for (let written = 0; written < bytes;) {
    const chunk = block.subarray(0, Math.min(block.length, bytes - written));
    // Vary every block so no two parts are equal.
    chunk[0] = written / chunk.length;
    hash.update(chunk);
    for (let done = 0; done < chunk.length;) done += await file.write(chunk.subarray(done));
    written += chunk.length;
  }
  return hash.digest("hex");
}

async function fileHash(path: string): Promise<string> {
  const { createHash } = await import("node:crypto");
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  const buffer = new Uint8Array(1 << 20);
  for (let read; (read = await file.read(buffer)) !== null;) hash.update(buffer.subarray(0, read));
  return hash.digest("hex");
}

function configText(
  location: string,
  destination: string,
  vessels: string,
  database = "state.db",
): string {
  return `[MONSTER]\nDatabase = ${database}\n\n[Directory bench]\nLocation = ${location}\nDestination = ${destination}\n\n${vessels}`;
}

async function bigFile(work: string) {
  report(`--- one ${sizeMiB} MiB file to one vessel`);
  const server = await startOpenSsh();
  try {
    const source = `${work}/big.bin`;
    const expected = await writeRandomFile(source, sizeBytes);
    await Deno.mkdir(`${work}/scp-dest`);
    const scpRun = await timedWithCpu(() => scp(server, source, `${work}/scp-dest/big.bin`));
    await Deno.remove(`${work}/scp-dest`, { recursive: true });
    const gib = sizeMiB / 1024;
    rows.push({
      scenario: `${sizeMiB} MiB, 1 vessel: scp`,
      ours: "",
      reference: `scp ${scpRun.seconds.toFixed(2)} s (${
        (sizeMiB / scpRun.seconds).toFixed(0)
      } MiB/s)`,
      ratio: `CPU ${(scpRun.cpu / gib).toFixed(2)} s/GiB`,
      target: "",
    });
    await Deno.mkdir(`${work}/big-out`);
    for (const carrier of CARRIERS) {
      await Deno.rename(source, `${work}/big-out/big.bin`);
      const config = `${work}/big-${carrier}.ini`;
      await Deno.writeTextFile(
        config,
        configText(
          `${work}/big-out`,
          `${work}/big-dest-${carrier}`,
          vesselIni(server, "v", { ...vesselKeys, SSHClient: carrier }),
          `${work}/state-big-${carrier}.db`,
        ),
      );
      const ours = await contentMonsterOnce(config);
      const got = await fileHash(`${work}/big-dest-${carrier}/big.bin`);
      if (got !== expected) throw new Error("the replicated file differs from the source");
      await Deno.remove(`${work}/big-dest-${carrier}`, { recursive: true });
      await Deno.rename(`${work}/big-out/processed/big.bin`, source);
      rows.push({
        scenario: `${sizeMiB} MiB, 1 vessel: ${carrier}`,
        ours: `${ours.seconds.toFixed(2)} s (${(sizeMiB / ours.seconds).toFixed(0)} MiB/s)`,
        reference: `scp ${scpRun.seconds.toFixed(2)} s`,
        ratio: `${(scpRun.seconds / ours.seconds).toFixed(2)}x scp speed`,
        target: ">= 1.00x",
      });
      rows.push({
        scenario: `shore CPU per GiB: ${carrier}`,
        ours: `${(ours.cpu / gib).toFixed(2)} s/GiB`,
        reference: `scp ${(scpRun.cpu / gib).toFixed(2)} s/GiB`,
        ratio: `${(scpRun.cpu / ours.cpu).toFixed(2)}x scp's economy`,
        target: ">= 1.00x",
      });
      rows.push({
        scenario: `peak memory, ${sizeMiB} MiB: ${carrier}`,
        ours: `${ours.peakMiB.toFixed(0)} MiB RSS`,
        reference: "",
        ratio: "",
        target: "<= 128 MiB (4 GiB file)",
      });
    }
  } finally {
    await server.stop();
  }
}

async function smallFiles(work: string) {
  report(
    `--- ${fileCount} files of 16 KiB to one vessel` +
      (smallRuns > 1 ? ` (${smallRuns} runs of each tool, taking turns; medians)` : ""),
  );
  const server = await startOpenSsh();
  try {
    const source = `${work}/small`;
    await Deno.mkdir(source);
    for (let i = 0; i < fileCount; i++) {
      await Deno.writeFile(`${source}/f${i}.bin`, randomBytes(16 << 10, i + 1));
    }
    // rsync's time on loopback moves 2.5 times from run to run: one run is not a figure.
    const rsyncRuns: ToolRun[] = [];
    const oursRuns = new Map(CARRIERS.map((carrier) => [carrier, [] as ToolRun[]]));
    for (let turn = 0; turn < smallRuns; turn++) {
      const seconds = await timed(() =>
        run("rsync", [
          "-a",
          "-e",
          `ssh -p ${server.port} ${sshClientOptions(server).join(" ")}`,
          `${source}/`,
          `root@127.0.0.1:${work}/rsync-dest-${turn}/`,
        ])
      );
      rsyncRuns.push({ seconds, timedOut: false });
      for (const carrier of CARRIERS) {
        const config = `${work}/small-${carrier}-${turn}.ini`;
        const dest = `${work}/small-dest-${carrier}-${turn}`;
        await Deno.writeTextFile(
          config,
          configText(
            source,
            dest,
            vesselIni(server, "v", { ...vesselKeys, SSHClient: carrier }),
            `${work}/state-small-${carrier}-${turn}.db`,
          ),
        );
        const ours = await contentMonsterOnce(config);
        const sample = `f${fileCount - 1}.bin`;
        if (await fileHash(`${dest}/${sample}`) !== sha256(randomBytes(16 << 10, fileCount))) {
          throw new Error("a replicated small file differs from the source");
        }
        // The next tool sends the same files again.
        for await (const entry of Deno.readDir(`${source}/processed`)) {
          await Deno.rename(`${source}/processed/${entry.name}`, `${source}/${entry.name}`);
        }
        await Deno.remove(`${source}/processed`);
        oursRuns.get(carrier)!.push({ seconds: ours.seconds, timedOut: false });
      }
    }
    const rsyncSeconds = medianRun(rsyncRuns).seconds;
    for (const carrier of CARRIERS) {
      const runs = oursRuns.get(carrier)!;
      const seconds = medianRun(runs).seconds;
      rows.push({
        scenario: `${fileCount} x 16 KiB, 1 vessel: ${carrier}`,
        ours: `${formatRuns(runs, 2)}, ${(fileCount / seconds).toFixed(0)} files/s`,
        reference: `rsync ${formatRuns(rsyncRuns, 2)}, ${
          (fileCount / rsyncSeconds).toFixed(0)
        } files/s`,
        ratio: `${(rsyncSeconds / seconds).toFixed(2)}x rsync speed`,
        target: ">= 1.00x",
      });
    }
  } finally {
    await server.stop();
  }
}

async function fanOut(work: string) {
  report(`--- ${fanoutMiB} MiB to three vessels`);
  // Each vessel sees its own directory at the same absolute path, as real vessels would.
  const mount = "/srv/cm-bench-fanout";
  const roots = await Promise.all([0, 1, 2].map(async (i) => {
    const root = `${work}/fan-vessel-${i}`;
    await Deno.mkdir(root);
    return root;
  }));
  const servers = await Promise.all(
    roots.map((root) => startOpenSsh({ binds: { [mount]: root } })),
  );
  try {
    const source = `${work}/fan.bin`;
    await writeRandomFile(source, fanoutBytes);
    const scpSeconds = await timed(() =>
      Promise.all(servers.map((server) => scp(server, source, `${mount}/scp.bin`)))
    );
    await Deno.mkdir(`${work}/fan-out`);
    for (const carrier of CARRIERS) {
      await Deno.rename(source, `${work}/fan-out/fan.bin`);
      const config = `${work}/fan-${carrier}.ini`;
      const vessels = servers.map((server, i) =>
        vesselIni(server, `v${i}`, { ...vesselKeys, SSHClient: carrier })
      )
        .join("\n");
      await Deno.writeTextFile(
        config,
        configText(
          `${work}/fan-out`,
          `${mount}/cm-${carrier}`,
          vessels,
          `${work}/state-fan-${carrier}.db`,
        ),
      );
      const ours = await contentMonsterOnce(config);
      await Deno.rename(`${work}/fan-out/processed/fan.bin`, source);
      rows.push({
        scenario: `${fanoutMiB} MiB, 3 vessels: ${carrier}`,
        ours: `${ours.seconds.toFixed(2)} s`,
        reference: `3 parallel scp ${scpSeconds.toFixed(2)} s`,
        ratio: `${(scpSeconds / ours.seconds).toFixed(2)}x scp speed`,
        target: ">= 1.00x",
      });
    }
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
  }
}

async function pickupLatency(work: string) {
  report("--- pickup latency of a 4 KiB file (daemon running)");
  const server = await startOpenSsh();
  const outbox = `${work}/latency-out`;
  const dest = `${work}/latency-dest`;
  await Deno.mkdir(outbox);
  const config = `${work}/latency.ini`;
  await Deno.writeTextFile(config, configText(outbox, dest, vesselIni(server, "v", vesselKeys)));
  const daemon = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, "run", "--config", config],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const latencies: number[] = [];
  try {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    for (let i = 0; i < 10; i++) {
      const written = performance.now();
      await Deno.writeFile(`${outbox}/l${i}.bin`, randomBytes(4096, i + 7));
      const target = `${dest}/l${i}.bin`;
      for (;;) {
        try {
          await Deno.stat(target);
          break;
        } catch {
          if (performance.now() - written > 30_000) throw new Error(`${target} never arrived`);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      }
      latencies.push((performance.now() - written) / 1000);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    daemon.kill("SIGTERM");
    await daemon.status;
    await server.stop();
  }
  latencies.sort((a, b) => a - b);
  rows.push({
    scenario: "pickup latency, 4 KiB",
    ours: `median ${latencies[5].toFixed(3)} s, max ${latencies[9].toFixed(3)} s`,
    reference: "lsyncd (delay 0) 0.23 s, measured earlier",
    ratio: "",
    target: "<= 0.25 s",
  });
}

const work = await Deno.makeTempDir({ prefix: "cm-bench-" });
try {
  if (runs("big")) await bigFile(work);
  if (runs("small")) await smallFiles(work);
  if (runs("fanout")) await fanOut(work);
  if (runs("latency")) await pickupLatency(work);
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

const header: Row = {
  scenario: "SCENARIO",
  ours: "CONTENTMONSTER",
  reference: "REFERENCE (same run)",
  ratio: "RATIO",
  target: "TARGET",
};
const all = [header, ...rows];
const keys = Object.keys(header) as (keyof Row)[];
const widths = keys.map((key) => Math.max(...all.map((row) => row[key].length)));
report("");
for (const row of all) {
  report(keys.map((key, i) => row[key].padEnd(widths[i])).join("  ").trimEnd());
}
