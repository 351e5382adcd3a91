/** Data-safety guarantees of issue 9, end to end through the CLI with local vessels. */
import assert from "node:assert/strict";
import { Store } from "../src/store/store.ts";
import denoJson from "../deno.json" with { type: "json" };
import {
  CliProcess,
  fileSha256,
  permissionFlags,
  PERMISSIONS,
  randomBytes,
  runCli,
  Workspace,
} from "./cli_harness.ts";
import { whileSwapped } from "./helpers.ts";

const CONFIG = `[MONSTER]
ChunkSize = 65536
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = /srv/inbox

[Vessel v]
Transport = local
Root = vessel
TempDir = /tmp/.ContentMonster
`;

async function shore(): Promise<{ ws: Workspace; config: string }> {
  const ws = await Workspace.create();
  await ws.mkdir("outbox", "vessel");
  return { ws, config: await ws.config(CONFIG) };
}

Deno.test("published files carry the source's permission bits; TempDir is 0700", async () => {
  const { ws, config } = await shore();
  try {
    const modes: Record<string, number> = {
      "key.pem": 0o600,
      "shared.txt": 0o644,
      "run.sh": 0o750,
    };
    for (const [name, mode] of Object.entries(modes)) {
      const path = await ws.write(`outbox/${name}`, randomBytes(200_000, mode));
      await Deno.chmod(path, mode);
    }
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);
    for (const [name, mode] of Object.entries(modes)) {
      const info = await Deno.stat(ws.path(`vessel/srv/inbox/${name}`));
      assert.equal((info.mode! & 0o777).toString(8), mode.toString(8), name);
    }
    assert.equal((await Deno.stat(ws.path("vessel/tmp/.ContentMonster"))).mode! & 0o777, 0o700);
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a vessel whose TempDir others can write is refused with the fix, by once and check; the next once, after the fix, delivers", async () => {
  const { ws, config } = await shore();
  try {
    await ws.write("outbox/big.bin", randomBytes(200_000, 1));
    await ws.mkdir("vessel/tmp/.ContentMonster");
    await Deno.chmod(ws.path("vessel/tmp/.ContentMonster"), 0o777);
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /writable by group or others \(mode 0777\); run `chmod 700/);
    assert.ok((await Deno.lstat(ws.path("outbox/big.bin"))).isFile, "moved to processed/");
    const check = await runCli(["check", "--config", config]);
    assert.equal(check.code, 1, check.stdout);
    assert.match(check.stdout, /TempDir\s+FAIL.*writable by group or others/);
    // The operator runs the fix the message gave: the delivery that failed for good goes again.
    await Deno.chmod(ws.path("vessel/tmp/.ContentMonster"), 0o700);
    const again = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /retrying 1 delivery that had failed/);
    assert.ok((await Deno.lstat(ws.path("outbox/processed/big.bin"))).isFile);
    assert.equal(
      await fileSha256(ws.path("vessel/srv/inbox/big.bin")),
      await fileSha256(ws.path("outbox/processed/big.bin")),
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a name delivered twice keeps both versions in processed/, and the log says so", async () => {
  const { ws, config } = await shore();
  try {
    await ws.write("outbox/report.csv", "a,b\n1,2\n");
    let result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);
    await ws.write("outbox/report.csv", "a,b\n3,4\n5,6\n");
    result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(await Deno.readTextFile(ws.path("outbox/processed/report.csv")), "a,b\n1,2\n");
    assert.equal(
      await Deno.readTextFile(ws.path("outbox/processed/report.1.csv")),
      "a,b\n3,4\n5,6\n",
    );
    assert.match(result.stderr, /processed\/report\.csv exists and is kept.*report\.1\.csv/);
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a processed/ planted as a symlink receives nothing; the refusal is logged", async () => {
  const { ws, config } = await shore();
  try {
    await ws.mkdir("victim");
    await Deno.symlink(ws.path("victim"), ws.path("outbox/processed"));
    await ws.write("outbox/authorized_keys", "ssh-ed25519 AAAA attacker\n");
    const result = await runCli(["once", "--config", config, "--timeout", "5"]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /processed" is a symbolic link; nothing is moved through it/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(ws.path("victim"))), []);
    assert.ok((await Deno.lstat(ws.path("outbox/authorized_keys"))).isFile);
  } finally {
    await ws.cleanup();
  }
});

Deno.test("deno task start and the compiled binary grant every permission: a narrower grant makes Deno resolve the finalizer's relative paths against getcwd()", () => {
  // The test below runs the CLI with PERMISSIONS (start's); CI cannot build the binary.
  assert.deepEqual(PERMISSIONS, ["--allow-all"]);
  assert.deepEqual(permissionFlags(denoJson.tasks.compile), PERMISSIONS);
});

Deno.test("a processed/ subdirectory swapped for a symlink while once moves files into it gets them, never the link's target", async () => {
  const { ws, config } = await shore();
  try {
    await ws.mkdir("victim", "outbox/sub", "outbox/processed/sub");
    const names = Array.from({ length: 2000 }, (_, i) => `evil${i}.sh`);
    for (const name of names) await ws.write(`outbox/sub/${name}`, `echo owned ${name}\n`);
    // Run as operators run it: with the permissions deno.json and the compiled binary grant.
    const once = new CliProcess(["once", "--config", config, "--timeout", "20"]);
    try {
      await whileSwapped(ws.path("outbox/processed/sub"), ws.path("victim"), async () => {
        await once.waitForLog(/everything delivered|delivered but not moved/, 60_000);
      });
    } finally {
      // Its exit may wait for the watcher to go through every swap's events; the files tell.
      once.kill("SIGKILL");
      await once.exited();
    }
    const placed = await Array.fromAsync(Deno.readDir(ws.path("victim")), (entry) => entry.name);
    assert.deepEqual(placed, [], "files moved into the link's target");
    for (const name of names) {
      // Delivered, then moved into processed/sub or left where it was (refused and logged).
      const kept = await fileSha256(ws.path(`outbox/sub/${name}`)) ??
        await fileSha256(ws.path(`outbox/processed/sub/${name}`));
      assert.ok(kept, `${name} is gone from the shore`);
      assert.equal(await fileSha256(ws.path(`vessel/srv/inbox/sub/${name}`)), kept, name);
    }
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a name that is not valid UTF-8 is warned about, shown by status, and once exits 1", async () => {
  const { ws, config } = await shore();
  try {
    await ws.write("outbox/fine.txt", "delivered\n");
    await ws.mkdir("outbox/sub");
    // Latin-1 "café.txt": byte 0xE9 alone is not UTF-8. Deno cannot name it, so a shell does.
    const made = await new Deno.Command("/bin/sh", {
      args: ["-c", `printf x > "$(printf '%s/caf\\351.txt' "$1")"`, "sh", ws.path("outbox/sub")],
    }).output();
    assert.equal(made.code, 0);
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /cannot replicate "sub\/caf\\uFFFD\.txt": its name is not valid UTF-8/,
    );
    assert.match(result.stderr, /1 file cannot be replicated/);
    assert.equal(await Deno.readTextFile(ws.path("vessel/srv/inbox/fine.txt")), "delivered\n");
    const status = await runCli(["status", "--config", config]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /directory "outbox": cannot replicate "sub\/caf\\uFFFD\.txt"/);
    const json = JSON.parse((await runCli(["status", "--config", config, "--json"])).stdout);
    assert.deepEqual(json.unaddressable, [{ directory: "outbox", relpath: "sub/caf\uFFFD.txt" }]);
  } finally {
    await ws.cleanup();
  }
});

Deno.test("leftovers of dropped deliveries older than a day are removed from the vessel, another shore's kept", async () => {
  const { ws, config } = await shore();
  try {
    // This shore's instance id names its leftovers; another shore shares the vessel.
    await ws.mkdir("state");
    const store = await Store.open(ws.path("state/cm.db"));
    const ours = store.instanceId;
    store.close();
    const theirs = ours === "0123456789ab" ? "ba9876543210" : "0123456789ab";
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    await Deno.mkdir(ws.path("vessel/tmp/.ContentMonster"), { recursive: true, mode: 0o700 });
    await Deno.chmod(ws.path("vessel/tmp/.ContentMonster"), 0o700);
    const partDir = async (key: string) => {
      const dir = ws.path(`vessel/tmp/.ContentMonster/${key}`);
      await Deno.mkdir(dir, { mode: 0o700 });
      await Deno.writeFile(`${dir}/0.part`, randomBytes(100, 1));
      await Deno.utime(dir, twoDaysAgo, twoDaysAgo);
      return dir;
    };
    const temp = async (path: string) => {
      const file = await ws.write(path, "half");
      await Deno.utime(file, twoDaysAgo, twoDaysAgo);
      return file;
    };
    const ourParts = await partDir(`${ours}-41`);
    const ourTemp = await temp(`vessel/srv/inbox/a/.contentmonster-${ours}-41.tmp`);
    const theirParts = await partDir(`${theirs}-41`);
    const theirTemp = await temp(`vessel/srv/inbox/a/.contentmonster-${theirs}-41.tmp`);
    const fresh = await ws.write(`vessel/srv/inbox/.contentmonster-${ours}-42.tmp`, "new");
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /removed 2 leftovers of dropped deliveries/);
    await assert.rejects(() => Deno.lstat(ourParts), Deno.errors.NotFound);
    await assert.rejects(() => Deno.lstat(ourTemp), Deno.errors.NotFound);
    assert.ok((await Deno.lstat(fresh)).isFile, "a recent temp file may belong to a running shore");
    assert.ok((await Deno.lstat(theirParts)).isDirectory, "another shore's parts went");
    assert.ok((await Deno.lstat(theirTemp)).isFile, "another shore's temp file went");
  } finally {
    await ws.cleanup();
  }
});

Deno.test("once ends with exit 1 when a delivered file cannot be moved to processed/", async () => {
  const { ws, config } = await shore();
  try {
    await ws.write("outbox/a.txt", "delivered\n");
    await ws.write("outbox/processed", "a file where processed/ should be\n");
    const result = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /cannot move to processed\//);
    // The file named processed goes too: only a directory of that name is processed/.
    assert.match(
      result.stderr,
      /2 files delivered but not moved to processed\/; see the errors above/,
    );
    assert.equal(await Deno.readTextFile(ws.path("vessel/srv/inbox/a.txt")), "delivered\n");
    assert.equal(await Deno.readTextFile(ws.path("outbox/a.txt")), "delivered\n");
  } finally {
    await ws.cleanup();
  }
});
