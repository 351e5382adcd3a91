/**
 * What an operator sees, through the CLI as a child process: progress and
 * delivery lines in the log, a `/metrics` scrape, `status` of a vessel that
 * goes down and comes back.
 */
import assert from "node:assert/strict";
import { CliProcess, pathExists, randomBytes, runCli, waitFor, Workspace } from "./cli_harness.ts";
import { faultTest, noticeSkip, startRig } from "./fault_harness.ts";
import { parsePrometheusText, sampleValue } from "./prometheus_text.ts";

const KiB = 1024;
noticeSkip("e2e_operator_test.ts");

async function shore(vessels: string): Promise<{ ws: Workspace; config: string }> {
  const ws = await Workspace.create();
  await ws.mkdir("outbox", "vessel-a", "vessel-b");
  const config = await ws.config(`[MONSTER]
ChunkSize = ${16 * KiB}
Database = state/cm.db
MetricsAddress = 127.0.0.1:0

[Directory outbox]
Location = outbox
Destination = /srv/inbox
${vessels}`);
  return { ws, config };
}

/** Waits until every name is in outbox/processed/. */
async function waitProcessed(ws: Workspace, names: string[], daemon: CliProcess): Promise<void> {
  await waitFor(
    async () => {
      for (const name of names) {
        try {
          await Deno.stat(ws.path(`outbox/processed/${name}`));
        } catch {
          return false;
        }
      }
      return true;
    },
    60_000,
    `${names.join(", ")} in processed/; log:\n${daemon.log}`,
  );
}

Deno.test("a throttled transfer logs progress lines with a percentage, then its delivery line", async () => {
  // 512 KiB at 64 KiB/s: about 8 s, so progress starts at 5 s.
  const { ws, config } = await shore(`[Vessel a]
Transport = local
Root = vessel-a
BandwidthLimit = ${64 * KiB}
`);
  const daemon = new CliProcess(["run", "--config", config]);
  try {
    await daemon.waitForLog("replicating 1 directory to 1 vessel");
    await ws.write("outbox/slow.bin", randomBytes(512 * KiB, 3));
    await waitProcessed(ws, ["slow.bin"], daemon);

    const progress = [
      ...daemon.log.matchAll(
        /INFO {2}vessel "a": "outbox\/slow\.bin": (\d+)% \(([\d.]+ KiB) of 512 KiB\) at [\d.]+ KiB\/s, ETA [\d.]+ (s|ms)\n/g,
      ),
    ];
    assert.ok(progress.length >= 1, `no progress line in:\n${daemon.log}`);
    for (const [, percent] of progress) {
      assert.ok(Number(percent) > 0 && Number(percent) < 100, `${percent}% in:\n${daemon.log}`);
    }
    // The delivery line may reach the test's pipe after the move it precedes shows on disk.
    await daemon.waitForLog(
      /vessel "a": "outbox\/slow\.bin": delivered 512 KiB in [\d.]+ s \([\d.]+ KiB\/s\), 32 parts\n/,
      5_000,
    );
    // Files move to processed/ in groups; the group's lines follow the moves.
    await daemon.waitForLog(/"outbox\/slow\.bin": delivered to a, moved to processed\/\n/, 5_000);
    assert.match(daemon.log, /vessel "a": connected\n/);
  } finally {
    daemon.kill("SIGTERM");
    await daemon.exited();
    await ws.cleanup();
  }
});

Deno.test("/metrics after three deliveries counts the bytes each vessel got, in a strict exposition", async () => {
  const { ws, config } = await shore(`[Vessel a]
Transport = local
Root = vessel-a

[Vessel b]
Transport = local
Root = vessel-b
`);
  const daemon = new CliProcess(["run", "--config", config]);
  try {
    await daemon.waitForLog("replicating 1 directory to 2 vessels");
    const url = /metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(daemon.log)?.[1];
    assert.ok(url, daemon.log);
    const sizes = { "one.bin": 0, "two.bin": 40 * KiB + 3, "sub/three.bin": 100 * KiB };
    for (const [name, size] of Object.entries(sizes)) {
      await ws.write(`outbox/${name}`, randomBytes(size, size + 1));
    }
    await waitProcessed(ws, Object.keys(sizes), daemon);

    const response = await fetch(url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusText(await response.text());
    const total = Object.values(sizes).reduce((a, b) => a + b, 0);
    for (const vessel of ["a", "b"]) {
      const labels = { vessel, directory: "outbox" };
      const value = (name: string, extra: Record<string, string> = labels) =>
        sampleValue(families, name, extra);
      assert.equal(value("contentmonster_delivered_bytes_total"), total, vessel);
      assert.equal(value("contentmonster_sent_bytes_total"), total, vessel);
      assert.equal(value("contentmonster_delivered_files_total"), 3, vessel);
      assert.equal(value("contentmonster_parts_resent_total"), 0, vessel);
      assert.equal(value("contentmonster_queued_files"), 0, vessel);
      assert.equal(value("contentmonster_queued_bytes"), 0, vessel);
      assert.equal(value("contentmonster_vessel_up", { vessel }), 1, vessel);
      assert.equal(value("contentmonster_deliveries_in_flight", { vessel }), 0, vessel);
      assert.equal(value("contentmonster_delivery_duration_seconds_count", { vessel }), 3, vessel);
      const age = value("contentmonster_last_delivery_age_seconds", { vessel });
      assert.ok(age !== undefined && age >= 0 && age < 60, `age ${age}`);
    }
    assert.equal(
      sampleValue(families, "contentmonster_processed_files_total", { directory: "outbox" }),
      3,
    );
    for (const family of families.values()) {
      assert.match(family.name, /^contentmonster_/);
      if (family.type === "counter") assert.match(family.name, /_total$/);
      assert.ok(family.help, `${family.name} has HELP`);
    }
    assert.equal((await fetch(url.replace("/metrics", "/other"))).status, 404);
  } finally {
    daemon.kill("SIGTERM");
    await daemon.exited();
    await ws.cleanup();
  }
});

Deno.test("a MetricsAddress that is not HOST:PORT exits 2 naming file, line and key", async () => {
  const { ws, config } = await shore(`[Vessel a]
Transport = local
Root = vessel-a
`);
  try {
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(config)).replace("127.0.0.1:0", "localhost"),
    );
    const result = await runCli(["run", "--config", config]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      result.stderr,
      /settings\.ini:4: \[MONSTER\] MetricsAddress: "localhost" is not HOST:PORT/,
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("MetricsAddress that cannot be bound fails the start naming line and address, making nothing", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { ws, config } = await shore(`[Vessel a]
Transport = local
Root = vessel-a
`);
  try {
    const text = await Deno.readTextFile(config);
    await Deno.writeTextFile(
      config,
      text.replace("127.0.0.1:0", `127.0.0.1:${listener.addr.port}`),
    );
    const result = await runCli(["once", "--config", config, "--timeout", "20"]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `settings\\.ini:4: \\[MONSTER\\] MetricsAddress: cannot serve metrics on ` +
          `127\\.0\\.0\\.1:${listener.addr.port}: .*in use`,
        "i",
      ),
    );
    assert.equal(await pathExists(ws.path("state")), false, "the state database was made");
  } finally {
    listener.close();
    await ws.cleanup();
  }
});

interface VesselJson {
  vessel: string;
  state: string;
  backoffUntil: string | null;
  failingSince: string | null;
  lastError: string | null;
  lastSuccessAt: string | null;
  queuedFiles: number;
}

async function vesselStatus(config: string): Promise<VesselJson> {
  const status = await runCli(["status", "--config", config, "--json"]);
  assert.equal(status.code, 0, status.stderr);
  return JSON.parse(status.stdout).vessels[0];
}

faultTest(
  "status --json shows a vessel backing off while its server refuses, connected again after",
  async () => {
    const rig = await startRig({ chunkSize: 64 * KiB });
    try {
      // 1 MiB at 256 KiB/s keeps the vessel connected for a few seconds once it is back.
      await Deno.writeTextFile(rig.config, `BandwidthLimit = ${256 * KiB}\n`, { append: true });
      rig.proxy.refuse(true);
      const files = new Map([["back.bin", randomBytes(1024 * KiB, 77)]]);
      await rig.writeSources(files);
      const daemon = rig.startDaemon();

      let down: VesselJson | undefined;
      await waitFor(
        async () => {
          down = await vesselStatus(rig.config);
          return down.state === "backing-off";
        },
        30_000,
        `a backing-off vessel in status; log:\n${daemon.log}`,
      );
      assert.match(down!.lastError ?? "", /Cannot connect/);
      assert.ok(down!.failingSince && down!.backoffUntil, JSON.stringify(down));
      assert.ok(Date.parse(down!.backoffUntil!) >= Date.parse(down!.failingSince!));
      assert.equal(down!.queuedFiles, 1);
      const table = await runCli(["status", "--config", rig.config]);
      assert.match(table.stdout, /^v\s+(backing off until|retrying)/m, table.stdout);
      assert.match(table.stdout, /vessel "v" failing since .*Cannot connect/, table.stdout);

      rig.proxy.refuse(false);
      let up: VesselJson | undefined;
      await waitFor(
        async () => {
          up = await vesselStatus(rig.config);
          return up.state === "connected";
        },
        60_000,
        `a connected vessel in status; log:\n${daemon.log}`,
      );
      assert.equal(up!.lastError, null);
      assert.equal(up!.backoffUntil, null);
      await rig.waitProcessed(files, 60_000, daemon);
      await waitFor(
        async () => (await vesselStatus(rig.config)).lastSuccessAt !== null,
        15_000,
        "a last success in status",
      );
      assert.match(daemon.log, /vessel "v": (failing|lost): .*Cannot connect.*\(retrying in/);
      assert.match(daemon.log, /vessel "v": back after [\d.]+ (s|ms|min)/);
    } finally {
      await rig.cleanup();
    }
  },
);

Deno.test("after kill -9 mid-file the delivery line tells how many parts were resumed", async () => {
  const { ws, config } = await shore(`[Vessel a]
Transport = local
Root = vessel-a
BandwidthLimit = ${128 * KiB}
`);
  const env = { CONTENTMONSTER_LOG: "debug" };
  const first = new CliProcess(["run", "--config", config], env);
  let second: CliProcess | undefined;
  try {
    await first.waitForLog("replicating 1 directory to 1 vessel");
    await ws.write("outbox/resume.bin", randomBytes(512 * KiB, 9));
    await waitFor(
      () => [...first.log.matchAll(/: part \d+ sent/g)].length >= 8,
      30_000,
      () => `8 parts sent; log:\n${first.log}`,
    );
    first.kill("SIGKILL");
    await first.exited();

    second = new CliProcess(["run", "--config", config], env);
    await waitProcessed(ws, ["resume.bin"], second);
    const deliveredLine =
      /"outbox\/resume\.bin": delivered 512 KiB in .*, (\d+) of 32 parts resumed\n/;
    // The delivery line may reach the test's pipe after the move it precedes shows on disk.
    await second.waitForLog(deliveredLine, 5_000);
    const resumed = deliveredLine.exec(second.log);
    assert.ok(resumed, second.log);
    assert.ok(Number(resumed[1]) >= 8 && Number(resumed[1]) < 32, `${resumed[1]} resumed`);

    const status = await runCli(["status", "--config", config, "--json"]);
    const vessel = JSON.parse(status.stdout).vessels[0];
    assert.ok(vessel.lastSuccessAt, status.stdout);
  } finally {
    first.kill("SIGKILL");
    second?.kill("SIGTERM");
    await second?.exited();
    await ws.cleanup();
  }
});
