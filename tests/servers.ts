/**
 * Real SSH servers on loopback for tests: OpenSSH `sshd` and Dropbear, each
 * with generated host and user keys and its own known_hosts file in a temp
 * directory (never the user's `~/.ssh`). Tests start them, use
 * {@linkcode TestServer.vesselConfig}, and stop them by PID.
 *
 * @module
 */
import type { SshClientKind, VesselConfig } from "../src/config/types.ts";
import { shellCommand } from "../transports/shell_quote.ts";
import { pathExists } from "./cli_harness.ts";

/** Which SSH server a {@linkcode TestServer} runs. */
export type ServerKind = "openssh" | "dropbear";

/** Options for {@linkcode startOpenSsh} and {@linkcode startDropbear}. */
export interface ServerOptions {
  /**
   * Absolute paths the server (and everything it starts) sees as another
   * directory: `{ "/srv/cm-e2e": "/tmp/x" }`. The server then runs in its own
   * mount namespace, so several servers can have the same absolute path.
   */
  readonly binds?: Readonly<Record<string, string>>;
  /**
   * Absolute paths where the server sees a small tmpfs of the given size in
   * bytes, to fill a vessel's disk. Implies a mount namespace, like `binds`.
   */
  readonly tmpfs?: Readonly<Record<string, number>>;
  /**
   * The SFTP server program, or `false` for none. OpenSSH without one refuses
   * the subsystem; with a path that cannot run, the subsystem exits 126.
   * Default: OpenSSH's `sftp-server`.
   */
  readonly sftpServer?: string | false;
  /**
   * Accept this password for root (OpenSSH only): password authentication is
   * turned on, and the server sees a private /etc/shadow holding its hash.
   */
  readonly rootPassword?: string;
  /**
   * Run inside this existing network namespace (`ip netns` name), listening
   * on `address` there, as the WAN bench's vessel (OpenSSH only).
   */
  readonly netns?: { readonly name: string; readonly address: string };
  /** More sshd_config lines (OpenSSH only), e.g. `MaxStartups 1:100:1`. */
  readonly sshdConfig?: readonly string[];
}

/** A running SSH server on 127.0.0.1 (or in a network namespace, option `netns`). */
export interface TestServer {
  readonly kind: ServerKind;
  readonly host: string;
  readonly port: number;
  readonly username: "root";
  /** Temp directory of this server: keys, config, known_hosts, vessel data. */
  readonly dir: string;
  /** A known_hosts file that holds this server's host key. */
  readonly knownHostsFile: string;
  /** An unencrypted ed25519 private key the server accepts for root. */
  readonly identityFile: string;
  /** The server's host public key, `"ssh-ed25519 AAAA..."`. */
  readonly hostPublicKey: string;
  /** A vessel config for this server; TempDir is `<dir>/vessel-tmp`. */
  vesselConfig(overrides?: Partial<VesselConfig>): VesselConfig;
  /** PIDs of the server and every process it started. */
  pids(): Promise<number[]>;
  /** Sends `signal` to the server and every process it started. */
  signal(signal: Deno.Signal): Promise<void>;
  /** The last few KiB the server wrote to stdout and stderr, for diagnosis. */
  output(): string;
  /** Kills the server and its children by PID and removes its temp files. */
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";
const DROPBEAR = "/usr/sbin/dropbear";
const DROPBEARKEY = "/usr/bin/dropbearkey";
const SSH_KEYGEN = "/usr/bin/ssh-keygen";
const UNSHARE = "/usr/bin/unshare";
/** OpenSSH's SFTP server, where Debian puts it. */
export const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
/** Where Dropbear looks for its SFTP server (compiled in on Debian). */
const DROPBEAR_SFTP_SERVER = "/usr/lib/sftp-server";

/**
 * Why servers of `kind` cannot run here, or `undefined` if they can. Tests
 * that skip print {@linkcode skipNotice} so CI can fail on skipped suites.
 */
export function serverUnavailable(kind: ServerKind): string | undefined {
  const needed = kind === "openssh"
    ? [SSHD, SSH_KEYGEN, SFTP_SERVER, UNSHARE]
    : [DROPBEAR, DROPBEARKEY, SSH_KEYGEN, UNSHARE, DROPBEAR_SFTP_SERVER];
  for (const path of needed) {
    try {
      Deno.statSync(path);
    } catch {
      return `${path} is missing (install ${
        kind === "openssh" ? "openssh-server" : "dropbear-bin"
      })`;
    }
  }
  if (Deno.uid?.() !== 0) return "the test SSH servers must run as root";
  return undefined;
}

/**
 * The SSH client the suites run over: `CONTENTMONSTER_TEST_SSH_CLIENT`
 * (`openssh` or `builtin`); unset, ContentMonster's own default. `deno task
 * test` runs the SFTP suites once with each.
 */
export function testSshClient(): SshClientKind | undefined {
  const chosen = Deno.env.get("CONTENTMONSTER_TEST_SSH_CLIENT");
  if (chosen === undefined || chosen === "") return undefined;
  if (chosen !== "openssh" && chosen !== "builtin") {
    throw new TypeError(
      `CONTENTMONSTER_TEST_SSH_CLIENT must be openssh or builtin, not "${chosen}"`,
    );
  }
  return chosen;
}

/**
 * Options for `ssh`, `scp` and `rsync -e ssh` to reach `server` as the tests
 * do: its key and known_hosts, no machine ssh_config, never a prompt.
 */
export function sshClientOptions(server: TestServer): string[] {
  return [
    "-F",
    "none",
    "-i",
    server.identityFile,
    "-o",
    `UserKnownHostsFile=${server.knownHostsFile}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
  ];
}

/** Writes the line CI looks for when an SFTP suite was skipped. */
export function skipNotice(suite: string, reason: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`SKIPPED sftp suite: ${suite}: ${reason}\n`));
}

/** Starts OpenSSH's sshd on a free loopback port. */
export async function startOpenSsh(options: ServerOptions = {}): Promise<TestServer> {
  const reason = serverUnavailable("openssh");
  if (reason) throw new Error(`Cannot start OpenSSH for a test: ${reason}`);
  const dir = await Deno.makeTempDir({ prefix: "cm-sshd-" });
  try {
    const hostKey = `${dir}/ssh_host_ed25519_key`;
    await run(SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hostKey]);
    const hostPublicKey = publicKeyOf(await Deno.readTextFile(`${hostKey}.pub`));
    const identityFile = await userKey(dir);
    await Deno.copyFile(`${identityFile}.pub`, `${dir}/authorized_keys`);
    const port = await freePort();
    const sftp = options.sftpServer ?? SFTP_SERVER;
    const config = [
      `ListenAddress ${options.netns?.address ?? "127.0.0.1"}:${port}`,
      `HostKey ${hostKey}`,
      "PidFile none",
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin yes",
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PasswordAuthentication ${options.rootPassword === undefined ? "no" : "yes"}`,
      "KbdInteractiveAuthentication no",
      "MaxSessions 20",
      "LogLevel ERROR",
      ...(sftp === false ? [] : [`Subsystem sftp ${sftp}`]),
      ...options.sshdConfig ?? [],
    ];
    const configFile = `${dir}/sshd_config`;
    await Deno.writeTextFile(configFile, config.join("\n") + "\n");
    // sshd refuses to start without its privilege separation directory.
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    const command = [SSHD, "-D", "-e", "-f", configFile];
    // This machine's /root/.bashrc runs `pyenv init` (~100 ms) for every remote command, which
    // bash reads even when not interactive when sshd starts it. Vessel users have a lean shell
    // start-up; hide the file so tests and benchmarks measure ContentMonster, not pyenv.
    const emptyRc = `${dir}/empty-bashrc`;
    await Deno.writeTextFile(emptyRc, "");
    const mounts: [string, string][] = await pathExists("/root/.bashrc")
      ? [["/root/.bashrc", emptyRc]]
      : [];
    if (options.rootPassword !== undefined) {
      mounts.push(["/etc/shadow", await shadowWithRootPassword(dir, options.rootPassword)]);
    }
    return await launch(
      "openssh",
      dir,
      port,
      hostPublicKey,
      identityFile,
      command,
      options,
      mounts,
    );
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

/**
 * Starts Dropbear on a free loopback port, in its own mount namespace where
 * root's home is a temp directory holding the test's `authorized_keys`.
 */
export async function startDropbear(options: ServerOptions = {}): Promise<TestServer> {
  const reason = serverUnavailable("dropbear");
  if (reason) throw new Error(`Cannot start Dropbear for a test: ${reason}`);
  const dir = await Deno.makeTempDir({ prefix: "cm-dropbear-" });
  try {
    const hostKey = `${dir}/dropbear_ed25519_host_key`;
    await run(DROPBEARKEY, ["-t", "ed25519", "-f", hostKey]);
    const hostPublicKey = publicKeyOf(await run(DROPBEARKEY, ["-y", "-f", hostKey]));
    const identityFile = await userKey(dir);
    const home = `${dir}/home`;
    await Deno.mkdir(`${home}/.ssh`, { recursive: true, mode: 0o700 });
    await Deno.copyFile(`${identityFile}.pub`, `${home}/.ssh/authorized_keys`);
    const port = await freePort();
    const extraMounts: [string, string][] = [["/root", home]];
    const sftp = options.sftpServer ?? SFTP_SERVER;
    if (sftp !== SFTP_SERVER) {
      const stand = `${dir}/sftp-server`;
      if (sftp === false) await Deno.writeTextFile(stand, "");
      else await Deno.symlink(sftp, stand);
      extraMounts.push([DROPBEAR_SFTP_SERVER, stand]);
    }
    const command = [
      DROPBEAR,
      ...["-F", "-E", "-s", "-j", "-k"],
      ...["-p", `127.0.0.1:${port}`, "-r", hostKey, "-P", `${dir}/dropbear.pid`],
    ];
    return await launch("dropbear", dir, port, hostPublicKey, identityFile, command, options, [
      ...extraMounts,
    ]);
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function launch(
  kind: ServerKind,
  dir: string,
  port: number,
  hostPublicKey: string,
  identityFile: string,
  command: string[],
  options: ServerOptions,
  mounts: [string, string][],
): Promise<TestServer> {
  const created: string[] = [];
  const allMounts: [string, string][] = [...mounts, ...Object.entries(options.binds ?? {})];
  const tmpfs = Object.entries(options.tmpfs ?? {});
  for (const target of [...Object.keys(options.binds ?? {}), ...Object.keys(options.tmpfs ?? {})]) {
    if (!target.startsWith("/")) throw new TypeError(`Bind target "${target}" is not absolute`);
    if (!(await pathExists(target))) {
      await Deno.mkdir(target, { recursive: true });
      created.push(target);
    }
  }
  const host = options.netns?.address ?? "127.0.0.1";
  let program = command[0];
  let args = command.slice(1);
  if (allMounts.length > 0 || tmpfs.length > 0) {
    const script = [
      ...allMounts.map(([target, source]) => shellCommand(["mount", "--bind", source, target])),
      ...tmpfs.map(([target, size]) =>
        shellCommand(["mount", "-t", "tmpfs", "-o", `size=${size}`, "tmpfs", target])
      ),
      `exec ${shellCommand(command)}`,
    ].join(" && ");
    program = UNSHARE;
    args = ["-m", "--propagation", "private", "sh", "-c", script];
  }
  if (options.netns) {
    // `ip netns exec` execs the command: the child's PID stays the server's.
    args = ["netns", "exec", options.netns.name, program, ...args];
    program = "ip";
  }
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = new OutputTail();
  const drained = Promise.all([output.drain(child.stdout), output.drain(child.stderr)]);
  let exited = false;
  const status = child.status.then((status) => {
    exited = true;
    return status;
  });

  const knownHostsFile = `${dir}/known_hosts`;
  await Deno.writeTextFile(knownHostsFile, `[${host}]:${port} ${hostPublicKey}\n`, {
    mode: 0o600,
  });

  const pids = () => descendantsOf(child.pid).then((found) => [child.pid, ...found]);
  const signal = async (signal: Deno.Signal) => {
    for (const pid of await pids()) {
      try {
        Deno.kill(pid, signal);
      } catch {
        // Exited meanwhile.
      }
    }
  };
  let stopped: Promise<void> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      if (!exited) {
        const all = await pids();
        for (const pid of all.reverse()) {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch {
            // Exited meanwhile.
          }
        }
      }
      await status;
      await drained;
      for (const target of created) await Deno.remove(target).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();

  const deadline = Date.now() + 15_000;
  while (!(await accepts(host, port, options.netns?.name))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(
        `Cannot start ${kind} on ${host}:${port}: ${
          exited ? "it exited" : "no connection within 15 s"
        }; output: ${output.text() || "(none)"}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  return {
    kind,
    host,
    port,
    username: "root",
    dir,
    knownHostsFile,
    identityFile,
    hostPublicKey,
    vesselConfig: (overrides = {}) => ({
      name: kind,
      transport: "sftp",
      address: host,
      port,
      username: "root",
      identityFile,
      knownHostsFile,
      strictHostKeyChecking: "yes",
      tempDir: `${dir}/vessel-tmp`,
      ignoreDirs: [],
      timeout: 10,
      fsync: true,
      // Never the machine's ~/.ssh/config: tests must not depend on who runs them.
      sshConfigFile: "none",
      sshClient: testSshClient(),
      ...overrides,
    }),
    pids,
    signal,
    output: () => output.text(),
    stop,
  };
}

/** A copy of /etc/shadow where root's password is `password`, for a server's own mount namespace. */
async function shadowWithRootPassword(dir: string, password: string): Promise<string> {
  const hashed = await new Deno.Command("openssl", {
    args: ["passwd", "-6", "-stdin"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = hashed.stdin.getWriter();
  await writer.write(new TextEncoder().encode(password + "\n"));
  await writer.close();
  const output = await hashed.output();
  if (!output.success) throw new Error("openssl passwd failed");
  const hash = new TextDecoder().decode(output.stdout).trim();
  const lines = (await Deno.readTextFile("/etc/shadow")).split("\n").map((line) =>
    line.startsWith("root:") ? line.replace(/^root:[^:]*:/, `root:${hash}:`) : line
  );
  const path = `${dir}/shadow`;
  await Deno.writeTextFile(path, lines.join("\n"), { mode: 0o600 });
  return path;
}

/** Keeps the last few KiB a server wrote, for error messages. */
class OutputTail {
  #text = "";

  async drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.#text = (this.#text + decoder.decode(chunk, { stream: true })).slice(-4096);
    }
  }

  text(): string {
    return this.#text.trim();
  }
}

/** An unencrypted ed25519 user key in `dir`; returns the private key path. */
export async function userKey(dir: string): Promise<string> {
  const path = `${dir}/id_ed25519`;
  await run(SSH_KEYGEN, ["-q", "-t", "ed25519", "-N", "", "-C", "cm-test", "-f", path]);
  return path;
}

/** `"type base64"` from a public key line (drops the comment). */
function publicKeyOf(text: string): string {
  const line = text.split("\n").find((line) => /^(ssh-|ecdsa-)/.test(line));
  if (!line) throw new Error(`Cannot find a public key in ${JSON.stringify(text)}`);
  return line.split(/\s+/).slice(0, 2).join(" ");
}

async function run(program: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(program, { args, stdin: "null" }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(
      `Cannot run ${shellCommand([program, ...args])}: exit ${output.code}: ${
        decoder.decode(output.stderr).trim()
      }`,
    );
  }
  return decoder.decode(output.stdout);
}

/** A loopback TCP port that was free a moment ago. */
async function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  await Promise.resolve();
  return port;
}

async function accepts(host: string, port: number, netns?: string): Promise<boolean> {
  if (netns) {
    // This process is outside the namespace: ask a shell inside it.
    const probe = `exec 3<>/dev/tcp/${host}/${port}`;
    const args = ["netns", "exec", netns, "bash", "-c", probe];
    const output = await new Deno.Command("ip", { args, stdout: "null", stderr: "null" }).output();
    return output.success;
  }
  try {
    const connection = await Deno.connect({ hostname: "127.0.0.1", port });
    connection.close();
    return true;
  } catch {
    return false;
  }
}

/** PIDs of every descendant of `root`, found through /proc. */
export async function descendantsOf(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
    } catch {
      continue;
    }
    // Fields after the command name, which is in parentheses and may hold anything.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const parent = Number(fields[1]);
    const list = children.get(parent) ?? [];
    list.push(Number(entry.name));
    children.set(parent, list);
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** Bytes of a file on the shore's file system, `undefined` if it does not exist. */
export async function readLocal(path: string): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Names in a directory on the shore, `[]` if it does not exist. */
export async function listLocal(path: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(path))).map((entry) => entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}
