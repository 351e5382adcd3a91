/**
 * Reads and validates `settings.ini` (the contract is DESIGN.md, "Config
 * contract"). {@linkcode parseConfig} checks everything that needs no file
 * system except reading `PasswordFile`/`PassphraseFile`;
 * {@linkcode checkConfigPaths} checks that the paths exist;
 * {@linkcode loadConfig} does both.
 *
 * Rules beyond the contract: an empty value (`Destination =`) means "not
 * set"; a value that spans several lines is an error except for
 * `IgnoreDirs`; section kinds (`MONSTER`, `Directory`, `Vessel`) match in
 * any case; `~` at the start of a shore path is the home directory.
 *
 * @module
 */

import { homedir, userInfo } from "node:os";
import { dirname, posix, resolve } from "node:path";
import { errorMessage } from "../log/logger.ts";
import { ConfigError, type ConfigLocation, formatConfigLocation } from "./errors.ts";
import { type IniEntry, type IniSection, parseIni } from "./ini.ts";
import { Secret } from "./secret.ts";
import type {
  Config,
  DirectoryConfig,
  HostKeyPolicy,
  MonsterConfig,
  SshClientKind,
  VesselConfig,
} from "./types.ts";

/** Options of {@linkcode parseConfig} and {@linkcode loadConfig}. */
export interface ParseConfigOptions {
  /** Environment (`HOME`, `USER`, `STATE_DIRECTORY`); default: the process's. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Reads `PasswordFile`/`PassphraseFile`; default: `Deno.readTextFileSync`. */
  readonly readTextFile?: (path: string) => string;
}

const KEYS = {
  MONSTER: ["ChunkSize", "Database", "MetricsAddress"],
  Directory: ["Location", "Destination"],
  Vessel: [
    "Transport",
    "Address",
    "Port",
    "Username",
    "Password",
    "PasswordFile",
    "Passphrase",
    "PassphraseFile",
    "IdentityFile",
    "KnownHostsFile",
    "StrictHostKeyChecking",
    "TempDir",
    "IgnoreDirs",
    "Timeout",
    "Fsync",
    "Connections",
    "BandwidthLimit",
    "Root",
    "SSHClient",
    "SSHCommand",
    "SSHConfigFile",
  ],
} as const;
type Kind = keyof typeof KEYS;
const HEADERS: Record<Kind, string> = {
  MONSTER: "[MONSTER]",
  Directory: "[Directory NAME]",
  Vessel: "[Vessel NAME]",
};
const SECRET_KEYS = ["Password", "Passphrase"];

const DEFAULT_CHUNK_SIZE = 10485760;
const DEFAULT_TEMP_DIR = "/tmp/.ContentMonster";
/** Most SSH connections a vessel may be given (sshd's MaxStartups is 10 at once by default). */
const MAX_CONNECTIONS = 64;
/** The longest delay `setTimeout` takes, in seconds. */
const MAX_TIMEOUT = 2147483;
const BOOLEANS: Record<string, boolean> = {
  yes: true,
  true: true,
  on: true,
  "1": true,
  no: false,
  false: false,
  off: false,
  "0": false,
};
/** OpenSSH's spellings (`ask` is interactive, so not accepted), plus `on`. */
const HOST_KEY_POLICIES: Record<string, HostKeyPolicy> = {
  yes: "yes",
  true: "yes",
  on: "yes",
  "accept-new": "accept-new",
  no: "no",
  false: "no",
  off: "no",
};

const SSH_CLIENTS: Record<string, SshClientKind> = { openssh: "openssh", builtin: "builtin" };
/** Keys whose default the OpenSSH client may take from ssh_config instead. */
const DEFAULTED_SETTINGS = [
  ["Port", "port"],
  ["Username", "username"],
  ["KnownHostsFile", "knownHostsFile"],
  ["StrictHostKeyChecking", "strictHostKeyChecking"],
] as const;

/** A path that must exist, checked by {@linkcode checkConfigPaths}. */
interface PathCheck {
  readonly path: string;
  readonly kind: "directory" | "file";
  readonly where: ConfigLocation;
}

const pathChecks = new WeakMap<Config, readonly PathCheck[]>();

/**
 * Reads, parses and checks the config file at `path`.
 * @throws {ConfigError} for a missing or unreadable file and every problem in it.
 */
export async function loadConfig(path: string, options: ParseConfigOptions = {}): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "the config file does not exist"
      : `cannot read the config file: ${errorMessage(error)}`;
    throw new ConfigError(reason, { file: path }, { cause: error });
  }
  const config = parseConfig(text, path, options);
  await checkConfigPaths(config);
  (config.warnings as string[]).push(...await secretModeWarnings(config));
  return config;
}

/**
 * Parses and validates config `text` read from `path` (relative paths in it
 * are resolved against the directory of `path`). Touches no file system
 * except to read `PasswordFile`/`PassphraseFile` through
 * `options.readTextFile`.
 * @throws {ConfigError} naming the file, line, section and key of the first problem.
 */
export function parseConfig(text: string, path: string, options: ParseConfigOptions = {}): Config {
  const env = (name: string) => options.env ? options.env[name] : Deno.env.get(name);
  const context: Context = {
    file: path,
    dir: dirname(resolve(path)),
    home: env("HOME") || homedir(),
    env,
    readTextFile: options.readTextFile ?? Deno.readTextFileSync,
    warnings: [],
    checks: [],
    secrets: [],
  };
  const document = parseIni(text, path, { secretKeys: SECRET_KEYS });
  const referenced = referencedKeys([
    ...document.defaults,
    ...document.sections.flatMap((section) => section.entries),
  ]);

  let monster: MonsterConfig | undefined;
  const directories: DirectoryConfig[] = [];
  const vessels: VesselConfig[] = [];
  const seen = new Map<string, number>();
  const ignoreDirsWhere = new Map<string, ConfigLocation>();
  for (const ini of document.sections) {
    const { kind, name } = classify(ini, path);
    const id = `${kind} ${name}`;
    if (seen.has(id)) {
      throw new ConfigError(
        `${HEADERS[kind].replace("NAME", name)} is defined twice (first on line ${seen.get(id)})`,
        { file: path, line: ini.line, section: ini.name },
      );
    }
    seen.set(id, ini.line);
    const section = new Section(ini, context);
    warnUnknownKeys(section, kind, referenced);
    if (kind === "MONSTER") monster = parseMonster(section, context);
    else if (kind === "Directory") directories.push(parseDirectory(section, name, directories));
    else {
      vessels.push(parseVessel(section, name));
      ignoreDirsWhere.set(name, section.where("IgnoreDirs"));
    }
  }
  for (const entry of document.defaults) {
    const known = Object.values(KEYS).some((keys) => isKnown(keys, entry.key));
    if (!known && !referenced.has(entry.key)) {
      context.warnings.push(
        formatConfigLocation({ file: path, line: entry.line, section: "DEFAULT" }) +
          unknownKeyReason(entry.name, Object.values(KEYS).flat()),
      );
    }
  }

  for (const kind of ["Directory", "Vessel"] as const) {
    if (!(kind === "Directory" ? directories : vessels).length) {
      throw new ConfigError(`no ${HEADERS[kind]} section: at least one is required`, {
        file: path,
      });
    }
  }
  const directoryNames = new Set(directories.map((directory) => directory.name));
  for (const vessel of vessels) {
    for (const ignored of vessel.ignoreDirs) {
      if (!directoryNames.has(ignored)) {
        context.warnings.push(
          formatConfigLocation(ignoreDirsWhere.get(vessel.name)!) +
            `"${ignored}" is not the name of any [Directory NAME]`,
        );
      }
    }
  }

  const config: Config = {
    path: resolve(path),
    monster: monster ?? parseMonster(undefined, context),
    directories,
    vessels,
    warnings: context.warnings,
  };
  pathChecks.set(config, context.checks);
  secretChecks.set(config, context.secrets);
  return config;
}

const secretChecks = new WeakMap<Config, readonly SecretCheck[]>();

/**
 * Warnings for files holding secrets that group or others can read (an
 * IdentityFile, a PasswordFile, a settings.ini holding a Password), as
 * OpenSSH warns about an unprotected private key.
 */
async function secretModeWarnings(config: Config): Promise<string[]> {
  const warnings: string[] = [];
  const seen = new Set<string>();
  for (const check of secretChecks.get(config) ?? []) {
    if (seen.has(check.path)) continue;
    seen.add(check.path);
    let mode: number;
    try {
      mode = ((await Deno.stat(check.path)).mode ?? 0) & 0o777;
    } catch {
      continue; // a missing file is reported by the path checks
    }
    if ((mode & 0o077) === 0) continue;
    warnings.push(
      formatConfigLocation(check.where) +
        `"${check.path}" holds ${check.holds} and is readable by group or others (mode ${
          mode.toString(8).padStart(4, "0")
        }); run \`chmod 600 ${check.path}\``,
    );
  }
  return warnings;
}

/**
 * Checks that every directory's `Location` and every local vessel's `Root`
 * is an existing directory and every `IdentityFile` an existing file.
 * @throws {ConfigError} naming the file, line, section and key of the first bad path.
 */
export async function checkConfigPaths(config: Config): Promise<void> {
  const checks = pathChecks.get(config) ?? derivePathChecks(config);
  for (const check of checks) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(check.path);
    } catch (error) {
      const reason = error instanceof Deno.errors.NotFound
        ? `"${check.path}" does not exist`
        : `cannot access "${check.path}": ${errorMessage(error)}`;
      throw new ConfigError(reason, check.where, { cause: error });
    }
    if (check.kind === "directory" && !info.isDirectory) {
      throw new ConfigError(`"${check.path}" is not a directory`, check.where);
    }
    if (check.kind === "file" && !info.isFile) {
      throw new ConfigError(`"${check.path}" is not a file`, check.where);
    }
  }
}

interface Context {
  readonly file: string;
  /** Absolute directory of the config file. */
  readonly dir: string;
  readonly home: string;
  readonly env: (name: string) => string | undefined;
  readonly readTextFile: (path: string) => string;
  readonly warnings: string[];
  readonly checks: PathCheck[];
  /** Files holding secrets (and the config itself when it holds one), for mode warnings. */
  readonly secrets: SecretCheck[];
}

/** A file whose mode {@linkcode loadConfig} checks, as OpenSSH does for keys. */
interface SecretCheck {
  readonly path: string;
  /** What the file holds, for the warning. */
  readonly holds: string;
  readonly where: ConfigLocation;
}

/** One section being read: values by canonical key name, and errors located at them. */
class Section {
  constructor(readonly ini: IniSection, readonly context: Context) {}

  /** Where `key` is set, or the section header when it is not. */
  where(key?: string): ConfigLocation {
    const line = (key && this.ini.entry(key)?.line) || this.ini.line;
    return { file: this.context.file, line, section: this.ini.name, key };
  }

  fail(key: string, reason: string, cause?: unknown): ConfigError {
    const inherited = this.ini.entry(key)?.inherited ? " (inherited from [DEFAULT])" : "";
    return new ConfigError(reason + inherited, this.where(key), cause ? { cause } : undefined);
  }

  /** The value of `key`, or undefined when unset or empty. Several lines are kept. */
  lines(key: string): string | undefined {
    const value = this.ini.get(key);
    return value === undefined || value.trim() === "" ? undefined : value;
  }

  /** The value of `key` on one line, or undefined when unset or empty. */
  text(key: string): string | undefined {
    const value = this.lines(key);
    if (value?.includes("\n")) {
      throw this.fail(
        key,
        "the value spans several lines: a line indented deeper than its key continues the " +
          "value above it; remove the indentation",
      );
    }
    return value;
  }

  required(key: string, purpose: string): string {
    const value = this.text(key);
    if (value === undefined) throw this.fail(key, `is required (${purpose}) but not set`);
    return value;
  }

  choice<T>(key: string, choices: Record<string, T>, fallback: T): T {
    const value = this.text(key);
    if (value === undefined) return fallback;
    const chosen = Object.hasOwn(choices, value.toLowerCase())
      ? choices[value.toLowerCase()]
      : undefined;
    if (chosen === undefined) {
      const names = Object.keys(choices).map((name) => `"${name}"`).join(", ");
      throw this.fail(key, `"${value}" is not one of ${names}`);
    }
    return chosen;
  }

  /** An absolute shore path: `~` expanded, relative to the config file's directory. */
  shorePath(key: string): string | undefined {
    const value = this.text(key);
    return value === undefined ? undefined : this.resolveShorePath(value);
  }

  resolveShorePath(value: string): string {
    const expanded = value === "~" || value.startsWith("~/")
      ? this.context.home + value.slice(1)
      : value;
    return resolve(this.context.dir, expanded);
  }

  /** An absolute vessel path, normalized, without a trailing slash. */
  vesselPath(key: string): string | undefined {
    const value = this.text(key);
    if (value === undefined) return undefined;
    if (!value.startsWith("/")) {
      throw this.fail(key, `"${value}" is not an absolute path (a path on the vessel)`);
    }
    if (value.includes("\0")) throw this.fail(key, "a path cannot contain a NUL character");
    const normal = posix.normalize(value);
    return normal.length > 1 ? normal.replace(/\/+$/, "") : normal;
  }

  check(key: string, path: string, kind: PathCheck["kind"]): void {
    this.context.checks.push({ path, kind, where: this.where(key) });
  }

  warn(key: string, reason: string): void {
    this.context.warnings.push(formatConfigLocation(this.where(key)) + reason);
  }
}

function classify(ini: IniSection, file: string): { kind: Kind; name: string } {
  const match = /^(\S+)(?:\s+(.*))?$/s.exec(ini.name.trim());
  const word = match?.[1].toLowerCase();
  const name = match?.[2]?.trim() ?? "";
  const kind = (Object.keys(KEYS) as Kind[]).find((kind) => kind.toLowerCase() === word);
  const where = { file, line: ini.line, section: ini.name };
  if (!kind) {
    throw new ConfigError(
      "unknown kind of section: expected [MONSTER], [Directory NAME] or [Vessel NAME]",
      where,
    );
  }
  if (kind === "MONSTER" && name) throw new ConfigError("[MONSTER] takes no name", where);
  if (kind !== "MONSTER" && !name) {
    throw new ConfigError(`a name is missing: expected ${HEADERS[kind]}`, where);
  }
  return { kind, name };
}

function parseMonster(section: Section | undefined, context: Context): MonsterConfig {
  let chunkSize = DEFAULT_CHUNK_SIZE;
  const chunkText = section?.text("ChunkSize");
  if (chunkText !== undefined) {
    chunkSize = Number(chunkText);
    if (!/^\d+$/.test(chunkText) || !Number.isSafeInteger(chunkSize) || chunkSize < 1) {
      throw section!.fail(
        "ChunkSize",
        `"${chunkText}" is not a positive whole number of bytes (for example 10485760)`,
      );
    }
  }
  let database = section?.shorePath("Database");
  if (database === undefined) {
    const stateDirectory = context.env("STATE_DIRECTORY")?.split(":")[0];
    database = stateDirectory
      ? resolve(context.dir, stateDirectory, "contentmonster.db")
      : resolve(context.dir, "contentmonster.db");
  }
  const metricsAddress = section && parseMetricsAddress(section);
  return metricsAddress ? { chunkSize, database, metricsAddress } : { chunkSize, database };
}

/** `HOST:PORT` (IPv6 as `[::1]:PORT`); port 0 takes any free port. */
function parseMetricsAddress(section: Section): MonsterConfig["metricsAddress"] {
  const text = section.text("MetricsAddress");
  if (text === undefined) return undefined;
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw section.fail(
      "MetricsAddress",
      `"${text}" is not HOST:PORT with a port from 0 to 65535 (for example 127.0.0.1:9464)`,
    );
  }
  return { hostname: match[1] ?? match[2], port, where: section.where("MetricsAddress") };
}

function parseDirectory(
  section: Section,
  name: string,
  others: readonly DirectoryConfig[],
): DirectoryConfig {
  const location = section.resolveShorePath(
    section.required("Location", "the source directory on this server"),
  );
  for (const other of others) {
    const relation = overlap(location, other.location);
    if (relation) {
      throw section.fail(
        "Location",
        `"${location}" ${relation} the Location of [Directory ${other.name}] ("${other.location}")`,
      );
    }
  }
  section.check("Location", location, "directory");
  const destination = section.vesselPath("Destination") ?? location;
  for (const other of others) {
    // Two directories writing into one tree would replace each other's files.
    const relation = overlap(destination, other.destination);
    if (relation) {
      throw section.fail(
        "Destination",
        `"${destination}" ${relation} the Destination of [Directory ${other.name}] ` +
          `("${other.destination}"): their files would overwrite each other`,
      );
    }
  }
  return { name, location, destination };
}

/** How `path` overlaps `other` ("is also", "is inside", "contains"), or `undefined`. */
function overlap(path: string, other: string): string | undefined {
  if (path === other) return "is also";
  if (isInside(path, other)) return "is inside";
  if (isInside(other, path)) return "contains";
  return undefined;
}

function isInside(path: string, parent: string): boolean {
  return path.startsWith(parent.endsWith("/") ? parent : parent + "/");
}

function parseVessel(section: Section, name: string): VesselConfig {
  const context = section.context;
  const transport = section.choice("Transport", { sftp: "sftp", local: "local" } as const, "sftp");
  const address = section.text("Address");
  if (transport === "sftp" && address === undefined) {
    throw section.fail(
      "Address",
      "is required with Transport = sftp, the default (the vessel's host name or IP address)",
    );
  }
  if (address !== undefined && /\s/.test(address)) {
    throw section.fail("Address", `"${address}" contains whitespace`);
  }
  if (transport === "local" && address !== undefined) {
    section.warn("Address", "is ignored with Transport = local");
  }

  let root: string | undefined;
  if (transport === "local") {
    root = section.resolveShorePath(
      section.required("Root", "the directory where the vessel's / lies, for Transport = local"),
    );
    section.check("Root", root, "directory");
  } else if (section.text("Root") !== undefined) {
    section.warn("Root", "is ignored unless Transport = local");
  }

  let port = 22;
  const portText = section.text("Port");
  if (portText !== undefined) {
    port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535) {
      throw section.fail("Port", `"${portText}" is not a port number from 1 to 65535`);
    }
  }

  let username = section.text("Username") ?? context.env("USER");
  if (username === undefined) {
    try {
      username = userInfo().username;
    } catch (error) {
      throw section.fail("Username", "is not set and the current user is unknown", error);
    }
  }

  const identityFile = section.shorePath("IdentityFile");
  if (identityFile !== undefined) {
    section.check("IdentityFile", identityFile, "file");
    context.secrets.push({
      path: identityFile,
      holds: "a private key",
      where: section.where("IdentityFile"),
    });
  }

  let timeout = 10;
  const timeoutText = section.text("Timeout");
  if (timeoutText !== undefined) {
    timeout = Number(timeoutText);
    if (!/^(\d+(\.\d*)?|\.\d+)$/.test(timeoutText) || timeout <= 0 || timeout > MAX_TIMEOUT) {
      throw section.fail(
        "Timeout",
        `"${timeoutText}" is not a positive number of seconds (at most ${MAX_TIMEOUT})`,
      );
    }
  }

  let bandwidthLimit: number | undefined;
  const limitText = section.text("BandwidthLimit");
  if (limitText !== undefined) {
    bandwidthLimit = Number(limitText);
    if (!/^\d+$/.test(limitText) || !Number.isSafeInteger(bandwidthLimit)) {
      throw section.fail(
        "BandwidthLimit",
        `"${limitText}" is not a whole number of bytes per second (0 means no limit)`,
      );
    }
    if (bandwidthLimit === 0) bandwidthLimit = undefined;
  }

  const connectionsText = section.text("Connections");
  let connections: number | "auto" = "auto";
  if (connectionsText !== undefined && connectionsText.toLowerCase() !== "auto") {
    connections = Number(connectionsText);
    if (!/^\d+$/.test(connectionsText) || connections < 1 || connections > MAX_CONNECTIONS) {
      throw section.fail(
        "Connections",
        `"${connectionsText}" is neither auto nor a whole number from 1 to ${MAX_CONNECTIONS}`,
      );
    }
  }
  if (transport === "local" && connectionsText !== undefined) {
    section.warn("Connections", "is ignored with Transport = local");
  }

  const sshClient = section.text("SSHClient") === undefined
    ? undefined
    : section.choice("SSHClient", SSH_CLIENTS, "openssh");
  const sshCommandText = section.text("SSHCommand");
  // A bare name is looked up on PATH when the transport starts, as a shell would.
  const sshCommand = sshCommandText === undefined || !sshCommandText.includes("/")
    ? sshCommandText
    : section.resolveShorePath(sshCommandText);
  if (sshCommand?.includes("/")) section.check("SSHCommand", sshCommand, "file");
  const sshConfigText = section.text("SSHConfigFile");
  const sshConfigFile = sshConfigText === undefined || sshConfigText.toLowerCase() === "none"
    ? sshConfigText?.toLowerCase()
    : section.resolveShorePath(sshConfigText);
  if (sshConfigFile !== undefined && sshConfigFile !== "none") {
    section.check("SSHConfigFile", sshConfigFile, "file");
  }
  if (transport === "local") {
    for (const key of ["SSHClient", "SSHCommand", "SSHConfigFile"]) {
      if (section.text(key) !== undefined) section.warn(key, "is ignored with Transport = local");
    }
  }
  const defaulted = DEFAULTED_SETTINGS.filter(([key]) => section.text(key) === undefined)
    .map(([, setting]) => setting);

  const ignoreDirs = [
    ...new Set(
      (section.lines("IgnoreDirs") ?? "").split(/[,\n]/).map((dir) => dir.trim()).filter(Boolean),
    ),
  ];

  return {
    name,
    transport,
    root,
    address,
    port,
    username,
    password: readSecret(section, "Password", "PasswordFile"),
    passphrase: readSecret(section, "Passphrase", "PassphraseFile"),
    identityFile,
    knownHostsFile: section.shorePath("KnownHostsFile") ??
      section.resolveShorePath("~/.ssh/known_hosts"),
    strictHostKeyChecking: section.choice("StrictHostKeyChecking", HOST_KEY_POLICIES, "yes"),
    tempDir: section.vesselPath("TempDir") ?? DEFAULT_TEMP_DIR,
    ignoreDirs,
    timeout,
    fsync: section.choice("Fsync", BOOLEANS, true),
    connections,
    bandwidthLimit,
    sshClient,
    sshCommand,
    sshConfigFile,
    defaulted,
  };
}

/** `key` inline or read from `fileKey` (one trailing newline trimmed); never both. */
function readSecret(section: Section, key: string, fileKey: string): Secret | undefined {
  const inline = section.text(key);
  const path = section.shorePath(fileKey);
  if (inline !== undefined && path !== undefined) {
    throw section.fail(
      fileKey,
      `cannot be set together with ${key} (line ${section.where(key).line}): set only one`,
    );
  }
  if (inline !== undefined) {
    section.context.secrets.push({
      path: section.context.file,
      holds: `a ${key}`,
      where: section.where(key),
    });
    if (section.ini.entry(key)?.strippedComment) {
      section.warn(
        key,
        `an inline comment (" #" or " ;") was cut from the value; if it belongs to the ` +
          `${key.toLowerCase()}, put the ${key.toLowerCase()} in ${fileKey}`,
      );
    }
    return new Secret(inline);
  }
  if (path === undefined) return undefined;
  section.context.secrets.push({
    path,
    holds: `a ${key.toLowerCase()}`,
    where: section.where(fileKey),
  });
  let content: string;
  try {
    content = section.context.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? `"${path}" does not exist`
      : `cannot read "${path}": ${errorMessage(error)}`;
    throw section.fail(fileKey, reason, error);
  }
  content = content.replace(/\r?\n$/, "");
  if (content === "") throw section.fail(fileKey, `"${path}" is empty`);
  return new Secret(content);
}

function warnUnknownKeys(section: Section, kind: Kind, referenced: ReadonlySet<string>): void {
  for (const entry of section.ini.entries) {
    if (entry.inherited || isKnown(KEYS[kind], entry.key) || referenced.has(entry.key)) continue;
    const elsewhere = (Object.keys(KEYS) as Kind[]).find((other) =>
      isKnown(KEYS[other], entry.key)
    );
    const reason = elsewhere
      ? `unknown key "${entry.name}" here: it belongs in ${HEADERS[elsewhere]}`
      : unknownKeyReason(entry.name, KEYS[kind]);
    section.context.warnings.push(
      formatConfigLocation({ ...section.where(), line: entry.line }) + reason,
    );
  }
}

function isKnown(keys: readonly string[], key: string): boolean {
  return keys.some((known) => known.toLowerCase() === key);
}

/** Keys used as `%(name)s` somewhere: not unknown, whatever their name. */
function referencedKeys(entries: readonly IniEntry[]): Set<string> {
  const names = new Set<string>();
  for (const entry of entries) {
    for (const match of entry.raw.matchAll(/%\(([^)]+)\)s/g)) names.add(match[1].toLowerCase());
  }
  return names;
}

function unknownKeyReason(name: string, known: readonly string[]): string {
  // No known key has a space in it. Such a name is mostly a line whose "=" was left out while
  // its value holds one: `Password s3cr=t` reads as the key "Password s3cr", and quoting it
  // printed part of the password. Only its first word is shown.
  const space = name.search(/\s/);
  if (space >= 0) {
    const word = name.slice(0, space);
    return `unknown key "${word} ..." (the rest of the name is not shown: it may be a ` +
      `value; is the "=" after "${word}" missing?)`;
  }
  const suggestion = closest(name, known);
  return suggestion
    ? `unknown key "${name}", did you mean "${suggestion}"?`
    : `unknown key "${name}" (known keys: ${known.join(", ")})`;
}

/** The known key nearest to `name` by edit distance, if near enough to be a typo. */
function closest(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const other = candidate.toLowerCase();
    let distance = editDistance(lower, other);
    if (lower.length >= 3 && (other.startsWith(lower) || lower.startsWith(other))) {
      distance = Math.min(distance, 1);
    }
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(lower.length / 3)) ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions, transpositions. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[i].push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, rows[i - 2][j - 2] + 1);
      }
      rows[i].push(value);
    }
  }
  return rows[a.length][b.length];
}

/** Checks for a config that {@linkcode parseConfig} did not make: no line numbers. */
function derivePathChecks(config: Config): PathCheck[] {
  const file = config.path;
  return [
    ...config.directories.map((directory): PathCheck => ({
      path: directory.location,
      kind: "directory",
      where: { file, section: `Directory ${directory.name}`, key: "Location" },
    })),
    ...config.vessels.flatMap((vessel): PathCheck[] => [
      ...(vessel.transport === "local" && vessel.root !== undefined
        ? [{
          path: vessel.root,
          kind: "directory" as const,
          where: { file, section: `Vessel ${vessel.name}`, key: "Root" },
        }]
        : []),
      ...(vessel.identityFile !== undefined
        ? [{
          path: vessel.identityFile,
          kind: "file" as const,
          where: { file, section: `Vessel ${vessel.name}`, key: "IdentityFile" },
        }]
        : []),
    ]),
  ];
}
