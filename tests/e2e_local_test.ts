/**
 * End to end through the CLI with local vessels: what an operator sees on
 * disk after `once` and `run`.
 */
import assert from "node:assert/strict";
import { HOSTILE_NAMES } from "./conformance.ts";
import {
  CliProcess,
  fileSha256,
  listFiles,
  randomBytes,
  runCli,
  sha256,
  waitFor,
  Workspace,
} from "./cli_harness.ts";

function twoVesselConfig(extra = ""): string {
  return `[MONSTER]
ChunkSize = 65536
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = /srv/inbox

[Vessel a]
Transport = local
Root = vessel-a

[Vessel b]
Transport = local
Root = vessel-b
${extra}`;
}

async function newShore(extraConfig = ""): Promise<{ ws: Workspace; config: string }> {
  const ws = await Workspace.create();
  await ws.mkdir("outbox", "vessel-a", "vessel-b");
  return { ws, config: await ws.config(twoVesselConfig(extraConfig)) };
}

Deno.test("once replicates nested and hostile names byte-identical to two vessels and moves them to processed/", async () => {
  const { ws, config } = await newShore();
  try {
    const files = new Map<string, Uint8Array>();
    for (const [i, name] of HOSTILE_NAMES.entries()) {
      files.set(name, randomBytes(100 + i * 50_000, i + 1));
    }
    files.set("deep/er/still/nested file.bin", randomBytes(300_000, 99));
    files.set("empty", new Uint8Array(0));
    files.set("exactly-one-chunk", randomBytes(65536, 7));
    for (const [name, data] of files) await ws.write(`outbox/${name}`, data);
    await ws.write("outbox/.writer-temp", "ignored");

    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);

    for (const vessel of ["vessel-a", "vessel-b"]) {
      for (const [name, data] of files) {
        assert.equal(
          await fileSha256(ws.path(`${vessel}/srv/inbox/${name}`)),
          sha256(data),
          `${vessel}: ${JSON.stringify(name)}`,
        );
      }
      const onVessel = await listFiles(ws.path(`${vessel}/srv/inbox`));
      assert.deepEqual(onVessel, [...files.keys()].sort(), "no extra or temp files on the vessel");
      assert.deepEqual(await listFiles(ws.path(`${vessel}/tmp`)), [], "TempDir left with parts");
    }
    for (const [name, data] of files) {
      assert.equal(await fileSha256(ws.path(`outbox/processed/${name}`)), sha256(data));
    }
    assert.deepEqual(
      await listFiles(ws.path("outbox")),
      [
        ".writer-temp",
        ...[...files.keys()].map((name) => `processed/${name}`).sort(),
      ].sort(),
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("IgnoreDirs keeps a directory off a vessel; its files still reach processed/, at once when every vessel ignores it", async () => {
  const ws = await Workspace.create();
  try {
    await ws.mkdir("reports", "photos", "scratch", "vessel-a", "vessel-b");
    const config = await ws.config(`[MONSTER]
Database = state/cm.db
[Directory reports]
Location = reports
[Directory photos]
Location = photos
[Directory scratch]
Location = scratch
[Vessel a]
Transport = local
Root = vessel-a
IgnoreDirs = scratch
[Vessel b]
Transport = local
Root = vessel-b
IgnoreDirs = photos, scratch
`);
    await ws.write("reports/r.txt", "report");
    await ws.write("photos/p.jpg", "photo");
    await ws.write("scratch/s.tmp", "scratch");
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);
    const reports = ws.path("reports");
    const photos = ws.path("photos");
    assert.equal(await Deno.readTextFile(ws.path(`vessel-a${reports}/r.txt`)), "report");
    assert.equal(await Deno.readTextFile(ws.path(`vessel-b${reports}/r.txt`)), "report");
    assert.equal(await Deno.readTextFile(ws.path(`vessel-a${photos}/p.jpg`)), "photo");
    assert.equal(await fileSha256(ws.path(`vessel-b${photos}/p.jpg`)), undefined);
    assert.deepEqual(
      await listFiles(ws.path("vessel-b")).then((f) => f.filter((p) => p.includes("photos"))),
      [],
    );
    assert.deepEqual(await listFiles(photos), ["processed/p.jpg"]);
    assert.deepEqual(await listFiles(reports), ["processed/r.txt"]);
    assert.deepEqual(await listFiles(ws.path("scratch")), ["processed/s.tmp"]);
    const scratch = ws.path("scratch");
    for (const vessel of ["vessel-a", "vessel-b"]) {
      assert.equal(await fileSha256(ws.path(`${vessel}${scratch}/s.tmp`)), undefined);
    }
  } finally {
    await ws.cleanup();
  }
});

Deno.test("run picks up a new file within a second and stops cleanly on SIGTERM", async () => {
  const { ws, config } = await newShore();
  const daemon = new CliProcess(["run", "--config", config]);
  try {
    await daemon.waitForLog("replicating");
    const data = randomBytes(4096, 5);
    const written = performance.now();
    // Into an existing directory: a file created right after its directory may miss its
    // close event (inotify adds the new directory's watch late) and wait the quiet period.
    await ws.write("outbox/new.bin", data);
    const target = ws.path("vessel-a/srv/inbox/new.bin");
    await waitFor(async () => (await fileSha256(target)) === sha256(data), 10_000, target);
    const latency = performance.now() - written;
    assert.ok(latency < 1000, `picked up after ${latency} ms`);
    await waitFor(
      async () => (await fileSha256(ws.path("outbox/processed/new.bin"))) === sha256(data),
      10_000,
      "processed copy",
    );
    assert.equal(await fileSha256(ws.path("vessel-b/srv/inbox/new.bin")), sha256(data));
    const signalled = performance.now();
    daemon.kill("SIGTERM");
    const status = await daemon.exited();
    assert.equal(status.code, 0, daemon.log);
    assert.ok(performance.now() - signalled < 5000);
  } finally {
    daemon.kill("SIGKILL");
    await daemon.exited();
    await ws.cleanup();
  }
});

Deno.test("--version, --help and a bad command line", async () => {
  const version = await runCli(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^contentmonster \d+\.\d+\.\d+/);
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /contentmonster once/);
  const onceHelp = await runCli(["once", "--help"]);
  assert.match(onceHelp.stdout, /--timeout SECONDS/);
  const bad = await runCli(["frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Unknown command "frobnicate"/);
  const badOption = await runCli(["--nope"]);
  assert.equal(badOption.code, 2);
});

Deno.test("under systemd (JOURNAL_STREAM set) log lines carry priorities and no timestamps", async () => {
  const { ws, config } = await newShore();
  try {
    await ws.write("outbox/j.txt", "journal");
    const result = await runCli(["once", "--config", config], { env: { JOURNAL_STREAM: "8:1" } });
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stderr.trim().split("\n");
    assert.ok(lines.length > 0);
    for (const line of lines) assert.match(line, /^<[3467]>[^<]/, line);
    assert.ok(lines.some((line) => line.startsWith('<6>"outbox/j.txt": delivered')), result.stderr);
  } finally {
    await ws.cleanup();
  }
});
