/**
 * Shared helpers of the fault-injection suite ("unstable links and crashes"):
 * a real OpenSSH vessel on loopback behind a {@linkcode FaultProxy}, a shore
 * run through the real CLI (`run` as a child process), a poller that watches
 * the vessel's destination during the whole run, and the final assertions
 * every scenario makes.
 *
 * The vessel's Address/Port point at the proxy, so its known_hosts entry is
 * written here for `[127.0.0.1]:PROXYPORT`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CliProcess, listFiles, randomBytes, sha256, waitFor, Workspace } from "./cli_harness.ts";
import { FaultProxy } from "./fault_proxy.ts";
import {
  serverUnavailable,
  skipNotice,
  startOpenSsh,
  type TestServer,
  testSshClient,
} from "./servers.ts";
import { openTransport } from "../transports/mod.ts";
import { TEMP_PREFIX, type TransportCapabilities } from "../transports/transport.ts";

export const MiB = 1 << 20;

/** Why the suite cannot run here (no sshd, not root), or `undefined`. */
export const unavailable = serverUnavailable("openssh");

/** Registers a fault test; ignored (with the CI skip notice) when sshd cannot run. */
export function faultTest(
  name: string,
  fn: () => Promise<void>,
  options: { ignore?: boolean } = {},
): void {
  Deno.test({
    name,
    ignore: unavailable !== undefined || options.ignore === true,
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });
}

/** Announces the skip once per test file. */
export function noticeSkip(file: string): void {
  if (unavailable) skipNotice(file, unavailable);
}

/** Writes one measured figure to stderr (tests may not use the console). */
export function report(scenario: string, figures: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`FIGURES ${scenario}: ${figures}\n`));
}

/** `12.34 MiB`, or `56.7 KiB` below a MiB. */
export function mib(bytes: number): string {
  if (Math.abs(bytes) < MiB) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / MiB).toFixed(2)} MiB`;
}

/** Options of {@linkcode startRig}. */
export interface RigOptions {
  /** Bytes per part (`ChunkSize`). */
  readonly chunkSize: number;
  /** The vessel's `Timeout` in seconds (default 3). */
  readonly timeout?: number;
  /**
   * Size in bytes of a tmpfs the vessel's sshd sees at a fresh `/srv/cm-full-*`
   * path (its own mount namespace), holding the destination and the TempDir.
   */
  readonly tmpfs?: number;
  /** The vessel's `SSHClient`; default: the config's default. */
  readonly sshClient?: "openssh" | "builtin";
  /** The vessel's `Connections`; default: the config's default (auto). */
  readonly connections?: number;
}

/** One scenario's world: shore workspace, sshd, proxy, config, daemons. */
export class Rig {
  readonly ws: Workspace;
  readonly server: TestServer;
  readonly proxy: FaultProxy;
  readonly config: string;
  /** The source directory on the shore. */
  readonly outbox: string;
  /** The destination directory as the vessel sees it. */
  readonly destination: string;
  /** The destination directory as this test process reaches it. */
  readonly destinationLocal: string;
  /** The vessel's TempDir as this test process reaches it. */
  readonly tempDirLocal: string;
  /** The vessel's tmpfs (option `tmpfs`) as this test process reaches it. */
  readonly tmpfsLocal: string | undefined;
  /** The part size. */
  readonly chunkSize: number;
  /** What the SFTP transport declares: `parallelParts` bounds the parts in flight. */
  readonly capabilities: TransportCapabilities;
  readonly #daemons: CliProcess[] = [];

  constructor(fields: {
    ws: Workspace;
    server: TestServer;
    proxy: FaultProxy;
    config: string;
    destination: string;
    destinationLocal: string;
    tempDirLocal: string;
    tmpfsLocal?: string;
    chunkSize: number;
    capabilities: TransportCapabilities;
  }) {
    this.ws = fields.ws;
    this.server = fields.server;
    this.proxy = fields.proxy;
    this.config = fields.config;
    this.outbox = fields.ws.path("outbox");
    this.destination = fields.destination;
    this.destinationLocal = fields.destinationLocal;
    this.tempDirLocal = fields.tempDirLocal;
    this.tmpfsLocal = fields.tmpfsLocal;
    this.chunkSize = fields.chunkSize;
    this.capabilities = fields.capabilities;
  }

  /** Starts `contentmonster run` (debug logs), tracked for cleanup. */
  startDaemon(env: Record<string, string> = {}): CliProcess {
    const daemon = new CliProcess(["run", "--config", this.config], {
      CONTENTMONSTER_LOG: "debug",
      ...env,
    });
    this.#daemons.push(daemon);
    return daemon;
  }

  /** Writes source files with an mtime a minute old, so the watcher takes them at once. */
  async writeSources(files: ReadonlyMap<string, Uint8Array>): Promise<void> {
    const past = new Date(Date.now() - 60_000);
    for (const [relpath, data] of files) {
      const path = await this.ws.write(`outbox/${relpath}`, data);
      await Deno.utime(path, past, past);
    }
  }

  /**
   * Waits (up to `timeoutMs`) until every file sits in processed/, checks that `poller` saw no
   * wrong bytes and the vessel holds every file, and returns the seconds since `since` (a
   * `performance.now()`).
   */
  async secondsToDelivery(
    files: ReadonlyMap<string, Uint8Array>,
    daemon: CliProcess,
    poller: DestinationPoller,
    since: number,
    timeoutMs = 60_000,
  ): Promise<number> {
    await this.waitProcessed(files, timeoutMs, daemon);
    const seconds = (performance.now() - since) / 1000;
    await poller.assertClean();
    await this.assertFinal(files);
    return seconds;
  }

  /** Waits until every file sits in processed/ with its expected content. */
  async waitProcessed(
    files: ReadonlyMap<string, Uint8Array>,
    timeoutMs: number,
    daemon?: CliProcess,
  ): Promise<void> {
    await waitFor(
      () => this.processed(files),
      timeoutMs,
      // The log as it is when the wait gives up, not as it was when the wait began.
      () => `every file in processed/; daemon log tail:\n${daemon?.log.slice(-6000) ?? ""}`,
    );
  }

  /** Part directories under the TempDir and the whole parts in each. */
  async partsOnVessel(): Promise<Map<string, number[]>> {
    const found = new Map<string, number[]>();
    for (const dir of await namesIn(this.tempDirLocal)) {
      const parts = (await namesIn(`${this.tempDirLocal}/${dir}`))
        .map((name) => /^(\d+)\.part$/.exec(name)?.[1])
        .filter((index) => index !== undefined)
        .map(Number)
        .sort((a, b) => a - b);
      found.set(dir, parts);
    }
    return found;
  }

  /** Whether every file sits in processed/ with its expected content. */
  async processed(files: ReadonlyMap<string, Uint8Array>): Promise<boolean> {
    for (const [relpath, data] of files) {
      if ((await statHash(`${this.outbox}/processed/${relpath}`)) !== sha256(data)) return false;
    }
    return true;
  }

  /**
   * The final state every scenario asserts: the vessel holds exactly `files`,
   * byte-identical, with no hidden temp files; every source sits in
   * processed/; the TempDir is empty.
   */
  async assertFinal(files: ReadonlyMap<string, Uint8Array>): Promise<void> {
    const names = [...files.keys()].sort();
    const onVessel = await listFiles(this.destinationLocal);
    // What a stray file is tells who left it: its size against the sources', and its age.
    const strays = await Promise.all(
      onVessel.filter((name) => !files.has(name)).map(async (name) => {
        const info = await Deno.stat(`${this.destinationLocal}/${name}`);
        return `${name}: ${info.size} bytes, modified ${info.mtime?.toISOString()}`;
      }),
    );
    assert.deepEqual(
      onVessel,
      names,
      `files on the vessel (now ${new Date().toISOString()}; ${strays.join("; ")})`,
    );
    assert.deepEqual(
      await listFiles(this.outbox),
      names.map((relpath) => `processed/${relpath}`).sort(),
      "files on the shore",
    );
    for (const [relpath, data] of files) {
      assert.equal(
        await statHash(`${this.destinationLocal}/${relpath}`),
        sha256(data),
        `vessel copy of ${relpath}`,
      );
      assert.equal(
        await statHash(`${this.outbox}/processed/${relpath}`),
        sha256(data),
        `processed/${relpath}`,
      );
    }
    assert.deepEqual(await walk(this.tempDirLocal), [], "leftovers in the vessel's TempDir");
  }

  /** Kills every daemon started here, stops sshd and the proxy, removes temp dirs. */
  async cleanup(): Promise<void> {
    for (const daemon of this.#daemons) daemon.kill("SIGKILL");
    await Promise.all(this.#daemons.map((daemon) => daemon.exited()));
    const logs = Deno.env.get("FAULT_LOGS"); // a directory to keep the daemons' logs in
    if (logs) {
      await Deno.mkdir(logs, { recursive: true });
      for (const [i, daemon] of this.#daemons.entries()) {
        await Deno.writeTextFile(`${logs}/${Date.now()}-${this.proxy.port}-${i}.log`, daemon.log);
      }
    }
    await this.proxy.close();
    await this.server.stop();
    await this.ws.cleanup();
  }
}

/** Starts sshd, the proxy in front of it, and writes the config. */
export async function startRig(options: RigOptions): Promise<Rig> {
  const ws = await Workspace.create();
  let server: TestServer | undefined;
  let proxy: FaultProxy | undefined;
  try {
    await ws.mkdir("outbox");
    let destination = ws.path("vessel/inbox");
    let tempDir = ws.path("vessel/tmp");
    let localRoot = "";
    let tmpfsLocal: string | undefined;
    if (options.tmpfs !== undefined) {
      const mount = `/srv/cm-full-${crypto.randomUUID().slice(0, 8)}`;
      server = await startOpenSsh({ tmpfs: { [mount]: options.tmpfs } });
      // The first PID is sshd itself (unshare and sh exec into it), inside the namespace.
      localRoot = `/proc/${(await server.pids())[0]}/root`;
      tmpfsLocal = localRoot + mount;
      destination = `${mount}/inbox`;
      tempDir = `${mount}/tmp`;
    } else {
      server = await startOpenSsh();
    }
    proxy = await FaultProxy.start({ target: { hostname: "127.0.0.1", port: server.port } });
    const knownHosts = await ws.write(
      "known_hosts",
      `[127.0.0.1]:${proxy.port} ${server.hostPublicKey}\n`,
    );
    // The suite's client unless the test chooses one (CONTENTMONSTER_TEST_SSH_CLIENT).
    const sshClient = options.sshClient ?? testSshClient();
    const config = await ws.config(`[MONSTER]
ChunkSize = ${options.chunkSize}
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = ${destination}

[Vessel v]
Address = 127.0.0.1
Port = ${proxy.port}
Username = root
IdentityFile = ${server.identityFile}
KnownHostsFile = ${knownHosts}
TempDir = ${tempDir}
Timeout = ${options.timeout ?? 3}
SSHConfigFile = none
${sshClient ? `SSHClient = ${sshClient}\n` : ""}${
      options.connections ? `Connections = ${options.connections}\n` : ""
    }`);
    // Constructing the transport connects nothing; it only tells what it declares.
    const transport = await openTransport(
      server.vesselConfig({ port: proxy.port, connections: options.connections }),
    );
    const capabilities = transport.capabilities;
    await transport.close();
    return new Rig({
      ws,
      capabilities,
      server,
      proxy,
      config,
      destination,
      destinationLocal: localRoot + destination,
      tempDirLocal: localRoot + tempDir,
      tmpfsLocal,
      chunkSize: options.chunkSize,
    });
  } catch (error) {
    await proxy?.close();
    await server?.stop();
    await ws.cleanup();
    throw error;
  }
}

/** What the {@linkcode DestinationPoller} saw. */
export interface PollReport {
  /** Files under a final name whose content was not an allowed one. */
  readonly violations: string[];
  /** Per final name, the distinct inodes seen: more than one means published again. */
  readonly inodes: Map<string, Set<number>>;
  /** How many times the destination was walked. */
  readonly polls: number;
}

/**
 * Watches the destination during the whole run: every file under a final
 * name (not a hidden `.contentmonster-*` temp name) must have one of the
 * contents allowed for that name, at every moment it is seen.
 */
export class DestinationPoller {
  readonly #root: string;
  readonly #allowed: Map<string, Set<string>>;
  readonly #verified = new Set<string>();
  readonly #violations: string[] = [];
  readonly #inodes = new Map<string, Set<number>>();
  #polls = 0;
  #running = true;
  readonly #loop: Promise<void>;

  /** `allowed`: per relative path, the sha256 of each content it may have. */
  constructor(root: string, allowed: ReadonlyMap<string, Iterable<string>>) {
    this.#root = root;
    this.#allowed = new Map([...allowed].map(([name, hashes]) => [name, new Set(hashes)]));
    this.#loop = this.#run();
  }

  /** Allowed contents for every file of `files` (one each). */
  static forFiles(root: string, files: ReadonlyMap<string, Uint8Array>): DestinationPoller {
    return new DestinationPoller(
      root,
      new Map([...files].map(([relpath, data]) => [relpath, [sha256(data)]])),
    );
  }

  /** Stops polling after one last look and returns what was seen. */
  async stop(): Promise<PollReport> {
    this.#running = false;
    await this.#loop;
    await this.#poll();
    return { violations: this.#violations, inodes: this.#inodes, polls: this.#polls };
  }

  /** Stops and asserts: no violation, and (unless told otherwise) each file published once. */
  async assertClean(options: { publishedOnce?: boolean } = {}): Promise<PollReport> {
    const seen = await this.stop();
    assert.deepEqual(seen.violations, [], "content seen under a final name");
    if (options.publishedOnce ?? true) {
      for (const [name, inodes] of seen.inodes) {
        assert.equal(inodes.size, 1, `"${name}" was published ${inodes.size} times`);
      }
    }
    assert.ok(seen.polls > 0);
    return seen;
  }

  async #run(): Promise<void> {
    while (this.#running) {
      await this.#poll();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async #poll(): Promise<void> {
    this.#polls++;
    for (const relpath of await walk(this.#root)) {
      if (relpath.endsWith("/")) continue; // an empty directory
      const name = relpath.slice(relpath.lastIndexOf("/") + 1);
      if (name.startsWith(TEMP_PREFIX)) continue;
      const path = `${this.#root}/${relpath}`;
      let file: Deno.FsFile;
      try {
        file = await Deno.open(path);
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) continue; // replaced or removed meanwhile
        if (error instanceof Deno.errors.IsADirectory) continue;
        throw error;
      }
      using _file = file;
      const info = await file.stat();
      if (info.isDirectory) continue;
      const ino = info.ino ?? 0;
      const inodes = this.#inodes.get(relpath) ?? new Set();
      inodes.add(ino);
      this.#inodes.set(relpath, inodes);
      const key = `${relpath}\0${ino}\0${info.size}\0${info.mtime?.getTime()}`;
      if (this.#verified.has(key)) continue;
      const allowed = this.#allowed.get(relpath);
      if (!allowed) {
        this.#violations.push(`unexpected file "${relpath}" (${info.size} bytes)`);
        this.#verified.add(key);
        continue;
      }
      const data = new Uint8Array(info.size);
      let filled = 0;
      while (filled < data.length) {
        const read = await file.read(data.subarray(filled));
        if (read === null) break;
        filled += read;
      }
      const hash = sha256(data.subarray(0, filled));
      if (!allowed.has(hash)) {
        this.#violations.push(
          `"${relpath}" had ${filled} bytes with sha256 ${hash}, not an allowed content`,
        );
      }
      this.#verified.add(key);
    }
  }
}

/** The sha256 of a file, `undefined` if it does not exist. */
export async function statHash(path: string): Promise<string | undefined> {
  try {
    return sha256(await Deno.readFile(path));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Every entry (files and directories) below `dir`, relative to it; `[]` if it is gone. */
export async function walk(dir: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(prefix ? `${dir}/${prefix}` : dir));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  for (const entry of entries) {
    const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) {
      const below = await walk(dir, relative);
      found.push(...(below.length > 0 ? below : [`${relative}/`]));
    } else found.push(relative);
  }
  return found.sort();
}

async function namesIn(dir: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The part indices the daemon's debug log says were sent. */
export function partsSent(log: string): number[] {
  return [...log.matchAll(/: part (\d+) sent/g)].map((match) => Number(match[1]));
}

/** The bytes of every part the daemon's debug log says was sent. */
export function partBytesSent(log: string): number {
  return [...log.matchAll(/: part \d+ sent \((\d+) bytes\)/g)]
    .reduce((sum, match) => sum + Number(match[1]), 0);
}

/** `count` files of `size` random bytes under `batch/`, the seed of each following `seed`. */
export function filesOf(count: number, size: number, seed: number): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    files.set(`batch/file-${i}.bin`, randomBytes(size, seed + i));
  }
  return files;
}

/** Sleeps `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
