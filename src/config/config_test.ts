import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { checkConfigPaths, loadConfig, parseConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { Secret } from "./secret.ts";
import type { Config } from "./types.ts";

const FIXTURES = new URL("../../tests/fixtures/config/", import.meta.url);
const ENV = { HOME: "/home/tester", USER: "tester" };

/** A minimal valid [Vessel NAME] section. */
const VESSEL = "[Vessel v]\nAddress = example.com\n";

/** Runs `fn` with a fresh temp dir, removed afterwards. */
async function withTempDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "contentmonster-config-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Writes `text` as settings.ini in `dir` and loads it with the test environment. */
async function load(dir: string, text: string): Promise<Config> {
  const path = join(dir, "settings.ini");
  await Deno.writeTextFile(path, text);
  return await loadConfig(path, { env: { ...ENV, HOME: dir } });
}

/** Parses `text` as if read from /etc/cm/settings.ini, with no file system access. */
function parse(text: string): Config {
  return parseConfig(text, "/etc/cm/settings.ini", {
    env: ENV,
    readTextFile: (path) => {
      throw new Deno.errors.NotFound(`no file "${path}" in this test`);
    },
  });
}

interface Where {
  file?: string;
  line?: number;
  section?: string;
  key?: string;
}

/** Asserts a ConfigError with exactly this location, a message naming it, and `pattern`. */
async function assertConfigError(
  fn: () => unknown,
  where: Where,
  pattern: RegExp,
): Promise<ConfigError> {
  let caught: unknown;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  const file = where.file ?? "/etc/cm/settings.ini";
  assert.equal(caught.file, file);
  assert.equal(caught.line, where.line);
  assert.equal(caught.section, where.section);
  assert.equal(caught.key, where.key);
  let prefix = where.line === undefined ? `${file}: ` : `${file}:${where.line}: `;
  if (where.section !== undefined) prefix += `[${where.section}] `;
  if (where.key !== undefined) prefix += `${where.key}: `;
  assert.ok(caught.message.startsWith(prefix), `"${caught.message}" starts with "${prefix}"`);
  assert.match(caught.message, pattern);
  return caught;
}

Deno.test("parseConfig() reads the original ContentMonster example unchanged", async () => {
  const url = new URL("original.example.ini", FIXTURES);
  const path = fileURLToPath(url);
  const config = parseConfig(await Deno.readTextFile(url), path, { env: ENV });
  const dir = dirname(path);
  assert.deepEqual(config.path, path);
  assert.deepEqual(config.monster, { chunkSize: 1048576, database: `${dir}/database.sqlite3` });
  assert.deepEqual(config.directories, [
    {
      name: "sampledir",
      location: "/home/user/replication",
      destination: "/home/user/replication",
    },
  ]);
  assert.equal(config.vessels.length, 1);
  const vessel = config.vessels[0];
  assert.equal(vessel.name, "samplevessel");
  assert.equal(vessel.transport, "sftp");
  assert.equal(vessel.address, "example.com");
  assert.equal(vessel.port, 22);
  assert.equal(vessel.username, "tester");
  assert.equal(vessel.password, undefined);
  assert.equal(vessel.passphrase, undefined);
  assert.equal(vessel.identityFile, undefined);
  assert.equal(vessel.knownHostsFile, "/home/tester/.ssh/known_hosts");
  assert.equal(vessel.strictHostKeyChecking, "yes");
  assert.equal(vessel.tempDir, "/tmp/.ContentMonster");
  assert.deepEqual(vessel.ignoreDirs, []);
  assert.equal(vessel.timeout, 10);
  assert.equal(vessel.fsync, true);
  assert.deepEqual(config.warnings, []);

  await assertConfigError(
    () => checkConfigPaths(config),
    { file: path, line: 6, section: "Directory sampledir", key: "Location" },
    /: "\/home\/user\/replication" does not exist$/,
  );
});

Deno.test("parseConfig() reads DESIGN.md's example with its inline comments", async () => {
  const url = new URL("design.example.ini", FIXTURES);
  const config = parseConfig(await Deno.readTextFile(url), fileURLToPath(url), { env: ENV });
  assert.deepEqual(config.monster, {
    chunkSize: 10485760,
    database: "/var/lib/contentmonster/state.db",
  });
  assert.deepEqual(config.directories, [
    { name: "outbox", location: "/srv/outbox", destination: "/srv/inbox" },
  ]);
  const vessel = config.vessels[0];
  assert.equal(vessel.name, "files.example.com");
  assert.equal(vessel.address, "files.example.com");
  assert.equal(vessel.username, "replication");
  assert.equal(vessel.password?.reveal(), "pa#ss:word=1");
  assert.equal(vessel.passphrase?.reveal(), "key phrase");
  assert.equal(vessel.identityFile, "/etc/contentmonster/id_ed25519");
  assert.equal(vessel.knownHostsFile, "/home/tester/.ssh/known_hosts");
  assert.deepEqual(vessel.ignoreDirs, ["outbox", "OTHER"]);
  // The inline comments after the secrets and the unknown directory are reported.
  assert.equal(config.warnings.length, 3);
  assert.match(config.warnings[0], /:14: \[Vessel files\.example\.com\] Password: an inline /);
  assert.match(config.warnings[1], /:15: \[Vessel files\.example\.com\] Passphrase: an inline /);
  assert.match(
    config.warnings[2],
    /:20: \[Vessel files\.example\.com\] IgnoreDirs: "OTHER" is not the name of any/,
  );
  for (const warning of config.warnings) assert.doesNotMatch(warning, /pa#ss|key phrase/);
});

Deno.test("loadConfig() reads every key, resolving shore paths against the config's directory", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(join(dir, "out box"));
    await Deno.mkdir(join(dir, "mirror"));
    await Deno.mkdir(join(dir, ".ssh"));
    await Deno.writeTextFile(join(dir, ".ssh", "id_ed25519"), "key", { mode: 0o600 });
    await Deno.writeTextFile(join(dir, "password.txt"), "pa ss #1\n", { mode: 0o600 });
    await Deno.writeTextFile(join(dir, "passphrase.txt"), "phrase\r\n\n", { mode: 0o600 });
    const config = await load(
      dir,
      `
[monster]
chunksize = 4096
database = state/cm.db

[Directory out box]
Location = out box/
Destination = /srv/in//box/

[Vessel local mirror]
Transport = LOCAL
Root = mirror
IgnoreDirs =
  out box,
Fsync = no

[Vessel files.example.com]
Address = 192.0.2.1
Port = 2222
Username = deploy
PasswordFile = password.txt
PassphraseFile = ~/passphrase.txt
IdentityFile = ~/.ssh/id_ed25519
KnownHostsFile = known_hosts
StrictHostKeyChecking = accept-new
TempDir = /var/tmp/cm/
Timeout = 2.5
`,
    );
    assert.equal(config.path, join(dir, "settings.ini"));
    assert.deepEqual(config.monster, { chunkSize: 4096, database: join(dir, "state/cm.db") });
    assert.deepEqual(config.directories, [
      { name: "out box", location: join(dir, "out box"), destination: "/srv/in/box" },
    ]);
    const [local, remote] = config.vessels;
    assert.equal(local.name, "local mirror");
    assert.equal(local.transport, "local");
    assert.equal(local.root, join(dir, "mirror"));
    assert.deepEqual(local.ignoreDirs, ["out box"]);
    assert.equal(local.fsync, false);
    assert.equal(remote.name, "files.example.com");
    assert.equal(remote.address, "192.0.2.1");
    assert.equal(remote.port, 2222);
    assert.equal(remote.username, "deploy");
    assert.ok(remote.password instanceof Secret);
    assert.equal(remote.password.reveal(), "pa ss #1");
    assert.equal(remote.passphrase?.reveal(), "phrase\r\n");
    assert.equal(remote.identityFile, join(dir, ".ssh/id_ed25519"));
    assert.equal(remote.knownHostsFile, join(dir, "known_hosts"));
    assert.equal(remote.strictHostKeyChecking, "accept-new");
    assert.equal(remote.tempDir, "/var/tmp/cm");
    assert.equal(remote.timeout, 2.5);
    assert.equal(remote.fsync, true);
    assert.deepEqual(config.warnings, []);
  });
});

Deno.test("parseConfig() takes defaults from the environment", () => {
  const text = "[Directory d]\nLocation = /srv/d\n" + VESSEL;
  const plain = parseConfig(text, "/etc/cm/settings.ini", { env: { USER: "alice", HOME: "/h" } });
  assert.equal(plain.monster.database, "/etc/cm/contentmonster.db");
  assert.equal(plain.monster.chunkSize, 10485760);
  assert.equal(plain.vessels[0].username, "alice");
  assert.equal(plain.vessels[0].knownHostsFile, "/h/.ssh/known_hosts");
  const systemd = parseConfig(text, "/etc/cm/settings.ini", {
    env: { USER: "bob", STATE_DIRECTORY: "/var/lib/contentmonster:/var/lib/other" },
  });
  assert.equal(systemd.monster.database, "/var/lib/contentmonster/contentmonster.db");
  assert.equal(systemd.vessels[0].username, "bob");
});

Deno.test("parseConfig() applies [DEFAULT] keys and %(name)s references", () => {
  const config = parse(`
[DEFAULT]
Port = 2200
base = /srv
[Directory a]
Location = %(base)s/a
[Directory b]
Location = %(base)s/b
Destination = /in/100%%
${VESSEL}`);
  assert.deepEqual(config.directories.map((d) => [d.location, d.destination]), [
    ["/srv/a", "/srv/a"],
    ["/srv/b", "/in/100%"],
  ]);
  assert.equal(config.vessels[0].port, 2200);
  assert.deepEqual(config.warnings, []);
});

Deno.test("parseConfig() accepts OpenSSH's spellings of StrictHostKeyChecking", () => {
  const spellings = { yes: "yes", ON: "yes", true: "yes", "Accept-New": "accept-new", no: "no" };
  for (const [written, policy] of Object.entries({ ...spellings, off: "no", False: "no" })) {
    const config = parse(`[Directory d]\nLocation=/d\n${VESSEL}StrictHostKeyChecking=${written}\n`);
    assert.equal(config.vessels[0].strictHostKeyChecking, policy, written);
  }
});

Deno.test("parseConfig() warns about unknown keys with the closest known key", () => {
  const config = parse(`[MONSTER]
ChunkSise = 1
[Directory d]
Location = /d
Address = x
[Vessel v]
Adress = example.com
Address = example.com
StrictHostKeyCheck = no
Root = /mnt
Bogus = 1
[DEFAULT]
User = me
`);
  assert.deepEqual(config.warnings, [
    '/etc/cm/settings.ini:2: [MONSTER] unknown key "ChunkSise", did you mean "ChunkSize"?',
    '/etc/cm/settings.ini:5: [Directory d] unknown key "Address" here: it belongs in [Vessel NAME]',
    '/etc/cm/settings.ini:7: [Vessel v] unknown key "Adress", did you mean "Address"?',
    '/etc/cm/settings.ini:9: [Vessel v] unknown key "StrictHostKeyCheck", did you mean ' +
    '"StrictHostKeyChecking"?',
    '/etc/cm/settings.ini:11: [Vessel v] unknown key "Bogus" (known keys: Transport, Address, ' +
    "Port, Username, Password, PasswordFile, Passphrase, PassphraseFile, IdentityFile, " +
    "KnownHostsFile, StrictHostKeyChecking, TempDir, IgnoreDirs, Timeout, Fsync, Connections, BandwidthLimit, Root, SSHClient, SSHCommand, SSHConfigFile)",
    "/etc/cm/settings.ini:10: [Vessel v] Root: is ignored unless Transport = local",
    '/etc/cm/settings.ini:13: [DEFAULT] unknown key "User", did you mean "Username"?',
  ]);
});

Deno.test("loadConfig() names a missing config file", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "nope.ini");
    const error = await assertConfigError(
      () => loadConfig(path),
      { file: path },
      /: the config file does not exist$/,
    );
    assert.ok(error.cause instanceof Deno.errors.NotFound);
  });
});

Deno.test("loadConfig() rejects a Location that does not exist or is not a directory", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "settings.ini");
    await assertConfigError(
      () => load(dir, `[MONSTER]\n\n[Directory outbox]\nLocation = nope\n${VESSEL}`),
      { file, line: 4, section: "Directory outbox", key: "Location" },
      new RegExp(`Location: "${join(dir, "nope")}" does not exist$`),
    );
    await Deno.writeTextFile(join(dir, "plain"), "");
    await assertConfigError(
      () => load(dir, `[Directory outbox]\nLocation = ${join(dir, "plain")}\n${VESSEL}`),
      { file, line: 2, section: "Directory outbox", key: "Location" },
      /"[^"]*plain" is not a directory$/,
    );
  });
});

Deno.test("loadConfig() rejects a local vessel whose Root or an IdentityFile is missing", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "settings.ini");
    await assertConfigError(
      () => load(dir, `[Directory d]\nLocation = .\n[Vessel m]\nTransport = local\nRoot = gone\n`),
      { file, line: 5, section: "Vessel m", key: "Root" },
      /"[^"]*gone" does not exist$/,
    );
    await assertConfigError(
      () => load(dir, `[Directory d]\nLocation = .\n${VESSEL}IdentityFile = ~/.ssh/id_x\n`),
      { file, line: 5, section: "Vessel v", key: "IdentityFile" },
      /"[^"]*\/\.ssh\/id_x" does not exist$/,
    );
  });
});

Deno.test("parseConfig() rejects bad MONSTER values", async () => {
  for (const value of ["ten", "0", "-1", "1.5", "1e6", "99999999999999999999"]) {
    await assertConfigError(
      () => parse(`[MONSTER]\nChunkSize = ${value}\n[Directory d]\nLocation=/d\n${VESSEL}`),
      { line: 2, section: "MONSTER", key: "ChunkSize" },
      new RegExp(`"${value}" is not a positive whole number of bytes`),
    );
  }
});

Deno.test("parseConfig() reads MetricsAddress as host and port, IPv6 in brackets", () => {
  const address = (value: string) => {
    const text = `[MONSTER]\nMetricsAddress = ${value}\n[Directory d]\nLocation=/d\n${VESSEL}`;
    const { hostname, port, where } = parse(text).monster.metricsAddress!;
    assert.deepEqual([where.line, where.section, where.key], [2, "MONSTER", "MetricsAddress"]);
    return { hostname, port };
  };
  assert.deepEqual(address("127.0.0.1:9464"), { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(address("[::1]:0"), { hostname: "::1", port: 0 });
  assert.deepEqual(address("localhost:65535"), { hostname: "localhost", port: 65535 });
  assert.equal(parse(`[Directory d]\nLocation=/d\n${VESSEL}`).monster.metricsAddress, undefined);
});

Deno.test("parseConfig() rejects a MetricsAddress that is not HOST:PORT", async () => {
  for (const value of ["9464", "127.0.0.1", "127.0.0.1:99999", ":9464", "host:port", "::1:9464"]) {
    await assertConfigError(
      () => parse(`[MONSTER]\nMetricsAddress = ${value}\n[Directory d]\nLocation=/d\n${VESSEL}`),
      { line: 2, section: "MONSTER", key: "MetricsAddress" },
      /is not HOST:PORT with a port from 0 to 65535 \(for example 127\.0\.0\.1:9464\)$/,
    );
  }
});

Deno.test("parseConfig() rejects a Directory without a usable Location or Destination", async () => {
  await assertConfigError(
    () => parse(`[Directory outbox]\nDestination = /srv\n${VESSEL}`),
    { line: 1, section: "Directory outbox", key: "Location" },
    /is required .* but not set$/,
  );
  await assertConfigError(
    () => parse(`[Directory outbox]\nLocation =   \n${VESSEL}`),
    { line: 2, section: "Directory outbox", key: "Location" },
    /is required/,
  );
  await assertConfigError(
    () => parse(`[Directory outbox]\nLocation = /srv\nDestination = srv/in\n${VESSEL}`),
    { line: 3, section: "Directory outbox", key: "Destination" },
    /"srv\/in" is not an absolute path/,
  );
  await assertConfigError(
    () => parse(`[Directory a]\nLocation = /srv\n[Directory b]\nLocation = /srv/b\n${VESSEL}`),
    { line: 4, section: "Directory b", key: "Location" },
    /"\/srv\/b" is inside the Location of \[Directory a\] \("\/srv"\)$/,
  );
  await assertConfigError(
    () => parse(`[Directory a]\nLocation = /srv\n  Destination = /x\n${VESSEL}`),
    { line: 2, section: "Directory a", key: "Location" },
    /spans several lines.*remove the indentation$/,
  );
});

Deno.test("parseConfig() rejects bad Vessel values", async () => {
  const dir = "[Directory d]\nLocation = /d\n";
  const cases: [string, number, string, RegExp][] = [
    ["[Vessel v]\nPort = 22\n", 3, "Address", /is required with Transport = sftp/],
    ["[Vessel v]\nAddress = a\nPort = ssh\n", 5, "Port", /"ssh" is not a port number/],
    ["[Vessel v]\nAddress = a\nPort = 0\n", 5, "Port", /"0" is not a port number/],
    ["[Vessel v]\nAddress = a\nPort = 65536\n", 5, "Port", /"65536" is not a port number/],
    [
      "[Vessel v]\nAddress = a\nStrictHostKeyChecking = ask\n",
      5,
      "StrictHostKeyChecking",
      /"ask" is not one of "yes", "true", "on", "accept-new", "no", "false", "off"$/,
    ],
    ["[Vessel v]\nAddress = a\nTransport = ftp\n", 5, "Transport", /"ftp" is not one of/],
    ["[Vessel v]\nAddress = a\nTimeout = 0\n", 5, "Timeout", /"0" is not a positive number/],
    ["[Vessel v]\nAddress = a\nTimeout = soon\n", 5, "Timeout", /"soon" is not a positive/],
    ["[Vessel v]\nAddress = a\nFsync = maybe\n", 5, "Fsync", /"maybe" is not one of/],
    ["[Vessel v]\nAddress = a\nConnections = 0\n", 5, "Connections", /neither auto nor .* 1 to 64/],
    ["[Vessel v]\nAddress = a\nConnections = many\n", 5, "Connections", /"many" is neither auto/],
    ["[Vessel v]\nAddress = a\nTempDir = tmp\n", 5, "TempDir", /not an absolute path/],
    ["[Vessel v]\nTransport = local\n", 3, "Root", /is required \(.*Transport = local\)/],
    [
      "[Vessel v]\nAddress = a\nPassword = x\nPasswordFile = /p\n",
      6,
      "PasswordFile",
      /cannot be set together with Password \(line 5\): set only one$/,
    ],
    [
      "[Vessel v]\nAddress = a\nPassphraseFile = /p\nPassphrase = x\n",
      5,
      "PassphraseFile",
      /cannot be set together with Passphrase \(line 6\)/,
    ],
    ["[Vessel v]\nAddress = a\nPasswordFile = /p\n", 5, "PasswordFile", /"\/p" does not exist$/],
  ];
  for (const [vessel, line, key, pattern] of cases) {
    await assertConfigError(() => parse(dir + vessel), { line, section: "Vessel v", key }, pattern);
  }
});

Deno.test("parseConfig() rejects bad sections", async () => {
  const dir = "[Directory d]\nLocation = /d\n";
  await assertConfigError(
    () => parse(`${dir}[Vesel v]\nAddress = a\n`),
    { line: 3, section: "Vesel v" },
    /unknown kind of section: expected \[MONSTER\], \[Directory NAME\] or \[Vessel NAME\]$/,
  );
  await assertConfigError(
    () => parse(`${dir}[Vessel]\nAddress = a\n`),
    { line: 3, section: "Vessel" },
    /a name is missing: expected \[Vessel NAME\]$/,
  );
  await assertConfigError(
    () => parse(`${dir}${VESSEL}[directory  d]\nLocation = /e\n`),
    { line: 5, section: "directory  d" },
    /\[Directory d\] is defined twice \(first on line 1\)$/,
  );
  await assertConfigError(
    () => parse(`${dir}${VESSEL}[Vessel v]\n`),
    { line: 5, section: "Vessel v" },
    /duplicate section \(first defined on line 3\)$/,
  );
  await assertConfigError(
    () => parse(`[MONSTER]\n${VESSEL}`),
    {},
    /: no \[Directory NAME\] section: at least one is required$/,
  );
  await assertConfigError(
    () => parse(dir),
    {},
    /: no \[Vessel NAME\] section: at least one is required$/,
  );
});

Deno.test("a Password never appears in errors, warnings, JSON or inspection", () => {
  const secret = "hunter2-Zq9";
  const dir = "[Directory d]\nLocation = /d\n";
  const messages: string[] = [];
  const failing = [
    `${dir}[Vessel v]\nAddress = a\nPassword = ${secret}\nPasswordFile = /p\n`,
    `${dir}[Vessel v]\nAddress = a\nPassword = ${secret}\n  ${secret}\n`,
    `${dir}[Vessel v]\nAddress = a\nPassword = ${secret}%\n`,
    `${dir}[Vessel v]\nAddress = a\nPassword = %(${secret})s\n`,
    `${dir}[Vessel v]\nAddress = a\nPassphrase = ${secret}\nPassphraseFile = /p\n`,
    `${dir}[Vessel v]\nAddress = a\nPassword ${secret}\n`,
    `${dir}[Vessel v]\nAddress = a\n${secret}\n`,
  ];
  for (const text of failing) {
    const error = catchError(() => parse(text));
    assert.equal(error.section, "Vessel v");
    assert.ok(error.line === 5 || error.line === 6, error.message);
    messages.push(error.message);
  }
  const config = parse(
    `${dir}[Vessel v]\nAddress = a\nPassword = ${secret} # comment\nPassphrase=${secret}\nx=1\n`,
  );
  assert.equal(config.vessels[0].password?.reveal(), secret);
  assert.equal(config.vessels[0].passphrase?.reveal(), secret);
  assert.equal(config.warnings.length, 2);
  messages.push(...config.warnings, JSON.stringify(config), Deno.inspect(config, { depth: 9 }));
  messages.push(String(config.vessels[0].password), `${config.vessels[0].passphrase}`);
  for (const message of messages) assert.ok(!message.includes(secret), message);
  assert.match(JSON.stringify(config), /"password":"\[secret\]"/);
});

function catchError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

Deno.test("parseConfig() reads SSHClient, SSHCommand and SSHConfigFile, and which SSH settings were defaulted", () => {
  const plain = parse(`[Directory d]\nLocation=/d\n${VESSEL}Port = 2222\n`).vessels[0];
  assert.equal(plain.sshClient, undefined);
  assert.equal(plain.sshCommand, undefined);
  assert.equal(plain.sshConfigFile, undefined);
  assert.deepEqual(plain.defaulted, ["username", "knownHostsFile", "strictHostKeyChecking"]);

  const chosen = parse(
    `[Directory d]\nLocation=/d\n${VESSEL}SSHClient = BuiltIn\nSSHCommand = ssh2\n` +
      `SSHConfigFile = None\nUsername = u\nKnownHostsFile = /k\nStrictHostKeyChecking = no\n`,
  ).vessels[0];
  assert.equal(chosen.sshClient, "builtin");
  assert.equal(chosen.sshCommand, "ssh2");
  assert.equal(chosen.sshConfigFile, "none");
  assert.deepEqual(chosen.defaulted, ["port"]);
});

Deno.test("parseConfig() reads Connections: auto by default, or a fixed count", () => {
  const vessel = (line: string) => parse(`[Directory d]\nLocation=/d\n${VESSEL}${line}`).vessels[0];
  assert.equal(vessel("").connections, "auto");
  assert.equal(vessel("Connections = Auto\n").connections, "auto");
  assert.equal(vessel("Connections = 6\n").connections, 6);
});

Deno.test("parseConfig() refuses an unknown SSHClient naming the choices", async () => {
  await assertConfigError(
    () => parse(`[Directory d]\nLocation=/d\n${VESSEL}SSHClient = putty\n`),
    { line: 5, section: "Vessel v", key: "SSHClient" },
    /"putty" is not one of "openssh", "builtin"/,
  );
});

Deno.test("loadConfig() refuses an SSHCommand or SSHConfigFile path that does not exist", async () => {
  await withTempDir(async (dir) => {
    const base = `[Directory d]\nLocation = .\n[Vessel v]\nAddress = h\n`;
    await assertConfigError(
      () => load(dir, `${base}SSHCommand = bin/ssh\n`),
      { file: join(dir, "settings.ini"), line: 5, section: "Vessel v", key: "SSHCommand" },
      /does not exist/,
    );
    await assertConfigError(
      () => load(dir, `${base}SSHConfigFile = ssh_config\n`),
      { file: join(dir, "settings.ini"), line: 5, section: "Vessel v", key: "SSHConfigFile" },
      /does not exist/,
    );
  });
});

Deno.test("loadConfig() warns about secrets that group or others can read, as OpenSSH does", async () => {
  const dir = await Deno.makeTempDir({ prefix: "contentmonster-config-" });
  try {
    await Deno.mkdir(join(dir, "out"));
    await Deno.writeTextFile(join(dir, "key"), "key", { mode: 0o640 });
    await Deno.chmod(join(dir, "key"), 0o640);
    await Deno.writeTextFile(join(dir, "pass"), "secret", { mode: 0o600 });
    const path = join(dir, "settings.ini");
    const text = (password: string) =>
      `[Directory out]\nLocation = out\n\n[Vessel a]\nAddress = a.example\n` +
      `IdentityFile = key\n${password}\n`;
    await Deno.writeTextFile(path, text("Password = hunter2"), { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    let config = await loadConfig(path, { env: {} });
    assert.equal(config.warnings.length, 2, config.warnings.join("\n"));
    assert.match(
      config.warnings[0],
      /IdentityFile: ".*\/key" holds a private key and is readable by group or others \(mode 0640\); run `chmod 600 /,
    );
    assert.match(
      config.warnings[1],
      /Password: ".*settings\.ini" holds a Password and is readable by group or others \(mode 0644\)/,
    );
    assert.ok(!config.warnings.join("").includes("hunter2"));
    await Deno.chmod(join(dir, "key"), 0o600);
    await Deno.writeTextFile(path, text("PasswordFile = pass"));
    config = await loadConfig(path, { env: {} });
    assert.deepEqual(config.warnings, [], "a 0644 settings.ini without a Password is fine");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig() refuses two directories whose Destinations overlap", () => {
  const base = "[Vessel a]\nTransport = local\nRoot = /\n";
  for (
    const [one, two, relation] of [
      ["/srv/in", "/srv/in", "is also"],
      ["/srv/in", "/srv/in/sub", "is inside"],
      ["/srv/in/sub", "/srv/in", "contains"],
    ]
  ) {
    const text = `[Directory a]\nLocation = /tmp/a\nDestination = ${one}\n\n` +
      `[Directory b]\nLocation = /tmp/b\nDestination = ${two}\n\n${base}`;
    assert.throws(
      () => parseConfig(text, "/etc/cm/settings.ini", { env: {} }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /\[Directory b\] Destination: /);
        assert.ok(error.message.includes(`${relation} the Destination of [Directory a]`));
        return true;
      },
    );
  }
  const fine = `[Directory a]\nLocation = /tmp/a\nDestination = /srv/in\n\n` +
    `[Directory b]\nLocation = /tmp/b\nDestination = /srv/in2\n\n${base}`;
  assert.equal(parseConfig(fine, "/etc/cm/settings.ini", { env: {} }).directories.length, 2);
});

Deno.test("an unknown key that may hold a value (its = left out) is quoted by its first word only", () => {
  // `Password s3cr=t` splits at its "=", and the key "Password s3cr" used to be quoted whole.
  const secret = "hunter2-Zq9";
  const hint = (word: string) =>
    `unknown key "${word} ..." (the rest of the name is not shown: it may be a value; ` +
    `is the "=" after "${word}" missing?)`;
  const config = parse(
    `[DEFAULT]\nPassword ${secret}=x\n[Directory d]\nLocation = /d\n` +
      `[Vessel v]\nAddress = a\nPassword: ${secret}\nPassphrase ${secret}:x\n`,
  );
  assert.equal(config.vessels[0].password?.reveal(), secret);
  assert.deepEqual(config.warnings, [
    `/etc/cm/settings.ini:8: [Vessel v] ${hint("Passphrase")}`,
    `/etc/cm/settings.ini:2: [DEFAULT] ${hint("Password")}`,
  ]);
});
