/**
 * End to end through the CLI with bad and tricky configs: exit status 2 with
 * a message naming the problem before anything is touched, warnings for
 * unknown keys, secrets that never show, and what `status` and `check` print.
 */
import assert from "node:assert/strict";
import { CliProcess, type CliResult, pathExists, runCli, Workspace } from "./cli_harness.ts";

/** Every command that loads the config; with a bad config none may start. */
const COMMANDS = [["once"], ["run"], ["check"], ["status"], ["status", "--json"]];

/** A valid config: one directory, one local vessel, the state database below `state/`. */
function validConfig(
  { monster = "", directory = "", vessel = "" } = {},
): string {
  return `[MONSTER]
ChunkSize = 65536
Database = state/cm.db
${monster}
[Directory outbox]
Location = outbox
Destination = /srv/inbox
${directory}
[Vessel a]
Transport = local
Root = vessel-a
${vessel}`;
}

/** A workspace with a source directory holding files, and an empty vessel root. */
async function newShore(): Promise<Workspace> {
  const ws = await Workspace.create();
  await ws.mkdir("vessel-a");
  await ws.write("outbox/keep.txt", "stay where you are");
  await ws.write("outbox/sub/deep.bin", new Uint8Array(70_000));
  return ws;
}

/** Every directory (with a trailing `/`) and file below `dir`, sorted. */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const entries: string[] = [];
  for await (const entry of Deno.readDir(prefix ? `${dir}/${prefix}` : dir)) {
    const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) entries.push(`${relative}/`, ...await tree(dir, relative));
    else entries.push(relative);
  }
  return entries.sort();
}

/** The 1-based number of the first line of `text` that contains `needle`. */
function lineOf(text: string, needle: string): number {
  const index = text.split("\n").findIndex((line) => line.includes(needle));
  assert.ok(index >= 0, `"${needle}" is not in the config`);
  return index + 1;
}

/**
 * Runs the CLI to completion; `run` (the daemon, which would run forever if
 * the config were accepted) is killed and reported after `timeoutMs`.
 */
async function runCommand(args: string[], cwd?: string, timeoutMs = 20_000): Promise<CliResult> {
  if (args[0] !== "run" || cwd !== undefined) return await runCli(args, { cwd });
  const daemon = new CliProcess(args);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    const status = await Promise.race([daemon.exited(), timeout]);
    if (status === "timeout") {
      assert.fail(`"${args.join(" ")}" still runs after ${timeoutMs} ms:\n${daemon.log}`);
    }
    return { code: status.code, stdout: "", stderr: daemon.log };
  } finally {
    clearTimeout(timer);
    daemon.kill("SIGKILL");
    await daemon.exited();
  }
}

function show(result: CliResult): string {
  return `exit ${result.code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/**
 * Runs every command with `args` and checks each exits 2, says `message` on
 * stderr, prints nothing on stdout, and leaves the workspace as it was.
 */
async function assertRefused(
  ws: Workspace,
  args: string[],
  message: string,
  options: { cwd?: string; commands?: string[][] } = {},
): Promise<void> {
  const before = await tree(ws.dir);
  for (const command of options.commands ?? COMMANDS) {
    const result = await runCommand([...command, ...args], options.cwd);
    const what = `${[...command, ...args].join(" ")}\n${show(result)}`;
    assert.equal(result.code, 2, what);
    assert.ok(result.stderr.includes(message), `expected "${message}" in:\n${what}`);
    assert.equal(result.stdout, "", what);
  }
  assert.equal(await pathExists(ws.path("state/cm.db")), false, "the database was created");
  assert.equal(await pathExists(ws.path("state")), false, "the database directory was created");
  assert.deepEqual(await tree(ws.dir), before, "the workspace changed");
  assert.deepEqual(await tree(ws.path("outbox")), ["keep.txt", "sub/", "sub/deep.bin"]);
}

Deno.test("a missing config file exits 2 naming the file", async () => {
  const ws = await newShore();
  try {
    const missing = ws.path("etc/settings.ini");
    await assertRefused(
      ws,
      ["--config", missing],
      `${missing}: the config file does not exist`,
    );
    // Without --config, ./settings.ini is meant.
    await assertRefused(ws, [], "settings.ini: the config file does not exist", {
      cwd: ws.dir,
      commands: [["once"], ["status"]],
    });
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a non-numeric ChunkSize exits 2 naming file, line, section and key", async () => {
  const ws = await newShore();
  try {
    const text = validConfig().replace("ChunkSize = 65536", "ChunkSize = ten MiB");
    const config = await ws.config(text);
    await assertRefused(
      ws,
      ["--config", config],
      `${config}:${lineOf(text, "ChunkSize")}: [MONSTER] ChunkSize: "ten MiB" is not a ` +
        "positive whole number of bytes",
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a [Directory] without Location exits 2 naming the section and key", async () => {
  const ws = await newShore();
  try {
    const text = validConfig().replace("Location = outbox\n", "");
    const config = await ws.config(text);
    await assertRefused(
      ws,
      ["--config", config],
      `${config}:${lineOf(text, "[Directory outbox]")}: [Directory outbox] Location: is required`,
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("a Location that does not exist exits 2 naming the path", async () => {
  const ws = await newShore();
  try {
    const text = validConfig().replace("Location = outbox", "Location = not-there");
    const config = await ws.config(text);
    await assertRefused(
      ws,
      ["--config", config],
      `${config}:${lineOf(text, "Location")}: [Directory outbox] Location: ` +
        `"${ws.path("not-there")}" does not exist`,
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("an sftp vessel without Address exits 2 naming the vessel and key", async () => {
  const ws = await newShore();
  try {
    const text = `${validConfig()}
[Vessel web1]
Username = replication
Port = 2222
`;
    const config = await ws.config(text);
    await assertRefused(
      ws,
      ["--config", config],
      `${config}:${lineOf(text, "[Vessel web1]")}: [Vessel web1] Address: is required with ` +
        "Transport = sftp",
    );
  } finally {
    await ws.cleanup();
  }
});

Deno.test("an unknown command exits 2 and touches nothing", async () => {
  const ws = await newShore();
  try {
    const config = await ws.config(validConfig());
    await assertRefused(ws, ["frobnicate", "--config", config], 'Unknown command "frobnicate"', {
      commands: [[]],
    });
    await assertRefused(ws, ["--config", config, "--bogus"], "bogus", { commands: [["once"]] });
    await assertRefused(ws, ["--config", config, "--json"], "--json goes with the status", {
      commands: [["once"]],
    });
  } finally {
    await ws.cleanup();
  }
});

Deno.test("an unknown key only warns, naming the closest known key", async () => {
  const ws = await Workspace.create();
  try {
    await ws.mkdir("outbox", "vessel-a");
    const text = validConfig({ directory: "Destinaton = /srv/typo" });
    const config = await ws.config(text);
    const result = await runCli(["once", "--config", config, "--timeout", "30"]);
    assert.equal(result.code, 0, show(result));
    assert.match(result.stderr, /WARN/);
    assert.ok(
      result.stderr.includes(
        `${config}:${lineOf(text, "Destinaton")}: [Directory outbox] ` +
          'unknown key "Destinaton", did you mean "Destination"?',
      ),
      show(result),
    );
    assert.ok(await pathExists(ws.path("state/cm.db")), "once ran");
  } finally {
    await ws.cleanup();
  }
});

Deno.test("passwords and passphrases never show in once, status or status --json", async () => {
  const ws = await newShore();
  try {
    const secrets = ["s3cr3t-value", "s3cr3t-phrase"];
    const vessel = "Password = s3cr3t-value\nPassphrase = s3cr3t-phrase\n";
    const assertHidden = (result: CliResult, what: string) => {
      for (const secret of secrets) {
        assert.ok(
          !result.stdout.includes(secret),
          `${what} stdout shows ${secret}:\n${show(result)}`,
        );
        assert.ok(
          !result.stderr.includes(secret),
          `${what} stderr shows ${secret}:\n${show(result)}`,
        );
      }
      assert.ok(!`${result.stdout}${result.stderr}`.includes("s3cr3t"), what);
    };

    // A config that fails on another key of the same vessel.
    const badPort = validConfig({ vessel: vessel + "Port = twenty-two\n" });
    const badConfig = await ws.config(badPort);
    for (const command of COMMANDS) {
      const result = await runCommand([...command, "--config", badConfig, "--verbose"]);
      assert.equal(result.code, 2, show(result));
      assert.match(result.stderr, /\[Vessel a\] Port: "twenty-two" is not a port number/);
      assertHidden(result, `bad Port, ${command.join(" ")}`);
    }
    // A config whose error is in the password itself (a lone "%").
    const badSecret = validConfig({ vessel: "Password = s3cr3t-value%\n" });
    const badSecretConfig = await ws.config(badSecret);
    for (const command of COMMANDS) {
      const result = await runCommand([...command, "--config", badSecretConfig, "--verbose"]);
      assert.equal(result.code, 2, show(result));
      assert.ok(
        result.stderr.includes(`:${lineOf(badSecret, "Password")}: [Vessel a] Password: `),
        show(result),
      );
      assertHidden(result, `bad Password, ${command.join(" ")}`);
    }
    assert.equal(await pathExists(ws.path("state")), false);

    // A valid config: once replicates (debug logs on), then status shows the result.
    const config = await ws.config(validConfig({ vessel }));
    const once = await runCli(["once", "--config", config, "--verbose", "--timeout", "30"]);
    assert.equal(once.code, 0, show(once));
    assertHidden(once, "once");
    assert.equal(
      await Deno.readTextFile(ws.path("vessel-a/srv/inbox/keep.txt")),
      "stay where you are",
    );
    for (const command of [["status"], ["status", "--json"]]) {
      const result = await runCli([...command, "--config", config, "--verbose"]);
      assert.equal(result.code, 0, show(result));
      assertHidden(result, command.join(" "));
    }
  } finally {
    await ws.cleanup();
  }
});

Deno.test("status on a fresh config shows every directory and vessel with nothing queued", async () => {
  const ws = await Workspace.create();
  try {
    await ws.mkdir("reports", "photos", "vessel-a", "vessel-b");
    const config = await ws.config(`[MONSTER]
Database = state/cm.db
[Directory reports]
Location = reports
[Directory photos]
Location = photos
[Vessel a]
Transport = local
Root = vessel-a
[Vessel b]
Transport = local
Root = vessel-b
`);
    const pairs = [["photos", "a"], ["photos", "b"], ["reports", "a"], ["reports", "b"]];

    const table = await runCli(["status", "--config", config]);
    assert.equal(table.code, 0, show(table));
    const [vessels, directories, queue] = table.stdout.trimEnd().split("\n\n")
      .map((block) => block.split("\n").map((line) => line.split(/\s{2,}/)));
    assert.deepEqual(vessels, [
      ["VESSEL", "STATE", "LAST DELIVERY", "LAST MINUTE", "QUEUED", "FAILED"],
      ["a", "unknown (no daemon has run)", "never", "0 B/s", "0 files, 0 B", "0"],
      ["b", "unknown (no daemon has run)", "never", "0 B/s", "0 files, 0 B", "0"],
    ]);
    assert.deepEqual(directories, [
      ["DIRECTORY", "WAITING", "OLDEST", "AGE"],
      ["reports", "0 files"],
      ["photos", "0 files"],
    ]);
    assert.deepEqual(queue, [
      ["DIRECTORY", "VESSEL", "QUEUED", "BYTES", "IN PROGRESS", "FAILED", "LAST ERROR"],
      ...pairs.map(([directory, vessel]) => [directory, vessel, "0", "0 B", "0", "0"]),
    ]);

    const json = await runCli(["status", "--config", config, "--json"]);
    assert.equal(json.code, 0, show(json));
    const report = JSON.parse(json.stdout);
    assert.deepEqual(
      report.queue,
      pairs.map(([directory, vessel]) => ({
        directory,
        vessel,
        queuedFiles: 0,
        queuedBytes: 0,
        inProgress: 0,
        failed: 0,
        lastError: null,
      })),
    );
    assert.deepEqual(
      report.vessels.map((v: { vessel: string; state: string }) => [v.vessel, v.state]),
      [
        ["a", "unknown"],
        ["b", "unknown"],
      ],
    );
    assert.deepEqual(report.directories, [
      {
        directory: "reports",
        waitingFiles: 0,
        oldestFile: null,
        oldestQueuedAt: null,
        oldestAgeSeconds: null,
      },
      {
        directory: "photos",
        waitingFiles: 0,
        oldestFile: null,
        oldestQueuedAt: null,
        oldestAgeSeconds: null,
      },
    ]);
    assert.equal(await pathExists(ws.path("state")), false, "status created the database");
  } finally {
    await ws.cleanup();
  }
});

Deno.test("check passes local vessels with a table and fails naming a vessel with a bad TempDir", async () => {
  const ws = await Workspace.create();
  try {
    await ws.mkdir("outbox", "vessel-a", "vessel-b");
    const text = (tempDirB: string) =>
      validConfig() + `
[Vessel b]
Transport = local
Root = vessel-b
${tempDirB}
`;
    const good = await runCli(["check", "--config", await ws.config(text(""))]);
    assert.equal(good.code, 0, show(good));
    const lines = good.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^VESSEL\s+CHECK\s+RESULT\s+DETAIL$/);
    for (const vessel of ["a", "b"]) {
      assert.match(good.stdout, new RegExp(`^${vessel}\\s+root\\s+ok\\s`, "m"));
      assert.match(good.stdout, new RegExp(`^${vessel}\\s+TempDir\\s+ok\\s`, "m"));
      assert.match(good.stdout, new RegExp(`^${vessel}\\s+writable /srv/inbox\\s+ok\\s`, "m"));
    }
    assert.doesNotMatch(good.stdout, /FAIL/);
    assert.match(good.stdout, /all 2 vessels pass/);

    await ws.write("vessel-b/file-not-dir", "a regular file");
    const config = await ws.config(text("TempDir = /file-not-dir/tmp"));
    const bad = await runCli(["check", "--config", config]);
    assert.equal(bad.code, 1, show(bad));
    assert.match(
      bad.stdout,
      /^b\s+TempDir\s+FAIL\s+Cannot use TempDir on vessel "b": "[^"]*\/vessel-b\/file-not-dir" above TempDir is not a directory/m,
    );
    assert.match(bad.stdout, /^a\s+TempDir\s+ok\s/m);
    assert.match(bad.stdout, /^FAIL vessel "b": TempDir: /m);
    assert.doesNotMatch(bad.stdout, /FAIL vessel "a"/);
    assert.equal(await Deno.readTextFile(ws.path("vessel-b/file-not-dir")), "a regular file");
  } finally {
    await ws.cleanup();
  }
});

Deno.test({
  name: "check shows unknown-key warnings, since it validates the config",
  async fn() {
    const ws = await Workspace.create();
    try {
      await ws.mkdir("outbox", "vessel-a");
      const text = validConfig({ vessel: "Tiemout = 5" });
      const config = await ws.config(text);
      const result = await runCli(["check", "--config", config]);
      assert.equal(result.code, 0, show(result));
      assert.ok(
        result.stderr.includes(
          `${config}:${lineOf(text, "Tiemout")}: [Vessel a] ` +
            'unknown key "Tiemout", did you mean "Timeout"?',
        ),
        show(result),
      );
    } finally {
      await ws.cleanup();
    }
  },
});
