/**
 * The OpenSSH carrier: one `ssh -s HOST sftp` child process per connection
 * does the SSH (crypto in C, on its own core, with every auth method and
 * ssh_config feature), ContentMonster speaks SFTP over its pipes, and remote
 * commands run as sessions multiplexed over the same SSH connection
 * (`ControlMaster`), so a command costs no new TCP or SSH handshake.
 *
 * Children are started in their own session (no terminal: nothing can
 * prompt) and end with us: when ContentMonster dies, their stdin closes and
 * ssh exits.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import type { Buffer } from "node:buffer";
import { TransportError } from "../transport.ts";
import type { ClientChannel, SFTPWrapper } from "./_ssh2.ts";
import { CommandChannel } from "./openssh_command.ts";
import {
  closedDuringLogin,
  type ConnectionOptions,
  type ExecResult,
  type RunCommand,
  SshConnection,
  type SshLink,
} from "./connection.ts";
import type { ConnectionInfo } from "./handshake.ts";
import { findExecutable, type OpenSshSetup } from "./openssh_setup.ts";
import { TextBeforeSftpError } from "./text_before_sftp.ts";

/** Lines of ssh's stderr kept for messages. */
const STDERR_LINES = 40;
/** How long a failed command waits for the master's own account of the failure. */
const MASTER_WORDS_MS = 500;
/** How long a command that found no control socket waits for its master to say why it ended. */
const MASTER_ENDING_MS = 1500;

/** Options of {@linkcode openOpenSsh}. */
export interface OpenSshOptions extends ConnectionOptions {
  readonly setup: OpenSshSetup;
  /** This connection's control socket, inside `setup.dir`. */
  readonly controlPath: string;
  /** Hears that `ssh` runs. */
  readonly onStarted?: () => void;
  /**
   * Hears that ssh's TCP connection is up, and how long its handshake took
   * (see {@linkcode Diagnostics}). Through ProxyJump that is the jump host's
   * (its `ssh -W` writes to the same stderr): a floor of the vessel's round
   * trip, which is all a long link is judged by.
   */
  readonly onConnected?: (handshakeMs: number) => void;
  /** Hears that the vessel accepted the login, before the session starts. */
  readonly onAuthenticated?: () => void;
  /**
   * Gets the connection as soon as the vessel accepted the login, while its
   * SFTP session still starts: requests made on it then leave with the
   * session's INIT, a round trip sooner than after the server's VERSION. If
   * the session does not start, the connection is lost (its calls fail), and
   * the login ends as without this.
   */
  readonly onEarlyConnection?: (connection: SshConnection) => void;
  /** Hears that the vessel's SFTP server answered this connection's session. */
  readonly onSftpStarted?: () => void;
  /**
   * Gets a way to run commands as soon as ssh listens on its control socket,
   * once logged in: on a long link the session and the SFTP server take
   * several round trips more, and a command can run meanwhile.
   */
  readonly onCommandsReady?: (run: RunCommand) => void;
}

/**
 * Starts `ssh` for one connection and resolves once the vessel's SFTP server
 * answered. Rejects with a {@linkcode TransportError} coded from ssh's own
 * words: `"host-key"`, `"auth"`, `"unsupported"` or `"connection"`.
 *
 * A vessel that lets us log in but cannot start SFTP still gets a
 * connection, for commands only (as with the builtin client): its SFTP calls
 * reject with the {@linkcode SftpUnavailableError}, and `check` can say that
 * `cat` and the hasher work.
 */
export async function openOpenSsh(options: OpenSshOptions): Promise<SshConnection> {
  const withSftp = await start(options, true);
  if (!(withSftp instanceof SftpUnavailableError)) return withSftp;
  const commandsOnly = await start(options, false).catch(() => undefined);
  if (!(commandsOnly instanceof SshConnection)) throw withSftp;
  commandsOnly.sftpUnavailable(withSftp);
  return commandsOnly;
}

/**
 * ssh's own keepalives. None on an SFTP session: the connection judges its
 * liveness, from replies and from every byte ssh moves while a reply is
 * late, and pings it while idle; the answer to a keepalive of ssh's would
 * pass for progress of an SFTP server that hangs. A connection for commands
 * only has them, to find a dead link while idle (ssh sends them only when
 * the vessel was silent for the interval, so a slow but busy link lives).
 */
function keepaliveOptions(withSftp: boolean, timeout: number): string[] {
  return withSftp ? ["-o", "ServerAliveInterval=0"] : [
    "-o",
    `ServerAliveInterval=${Math.max(1, Math.ceil(timeout / 3))}`,
    "-o",
    "ServerAliveCountMax=3",
  ];
}

/**
 * The session of a connection for commands only. With none (`-N`) ssh never
 * reads its stdin, so the master of a daemon killed with -9 stayed logged in
 * for good; this one ends, and ssh with it, when the daemon's end closes it.
 */
const UNTIL_STDIN_ENDS = "exec cat >/dev/null";

async function start(
  options: OpenSshOptions,
  withSftp: boolean,
): Promise<SshConnection | SftpUnavailableError> {
  const { setup, vessel } = options;
  const where = `vessel "${vessel.name}" (${setup.target})`;
  const secrets = await setup.exposeSecrets();
  const hideSecrets = secrets.hide;
  const master = spawnInOwnSession(setup.command, [
    ...setup.options,
    ...keepaliveOptions(withSftp, vessel.timeout),
    "-v",
    "-o",
    "ControlMaster=yes",
    "-o",
    "ControlPersist=no",
    "-o",
    `ControlPath=${options.controlPath}`,
    ...(withSftp ? ["-s", "--", setup.host, "sftp"] : ["--", setup.host, UNTIL_STDIN_ENDS]),
  ], secrets.env);
  options.onStarted?.();
  const diagnostics = new Diagnostics(master, setup.isVesselAuthenticated);
  diagnostics.onConnected = options.onConnected;
  const authenticated = new Promise<void>((resolve) => diagnostics.onAuthenticated = resolve);
  authenticated.then(hideSecrets);
  if (options.onAuthenticated) authenticated.then(options.onAuthenticated);
  const exited = endOf(master);
  exited.then(hideSecrets);
  const onCommandsReady = options.onCommandsReady;
  if (withSftp && onCommandsReady) {
    authenticated.then(() => controlSocketReady(options.controlPath, exited)).then(
      () => onCommandsReady((command, deadlineMs) => runEarly(options, command, deadlineMs)),
      () => {}, // ssh exited: the login reports why.
    );
  }
  // The SFTP session reports its end only after the link has reported why ssh ended.
  let reported!: () => void;
  const linkReported = new Promise<void>((resolve) => reported = resolve);
  let linked = false;
  exited.then(() => {
    if (!linked) reported();
  });
  const timeoutMs = vessel.timeout * 3000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  // The session's end is reported once ssh has exited, so its own words are known by then.
  const session = withSftp
    // Loaded while ssh logs in: ssh2's modules take longer to load than the rest of the daemon.
    ? import("./_sftp_pipe.ts").then(({ sftpOverPipes }) =>
      sftpOverPipes(master.stdin!, master.stdout!, () => master.stdin?.end(), linkReported)
    )
    : undefined;
  const started = session
    ? session.then(({ sftp, answered }) => answered.then(() => sftp))
    : authenticated.then(() => controlSocketReady(options.controlPath, exited)).then(() =>
      undefined
    );
  started.catch(() => {}); // Judged below, from ssh's own words once it exited.
  let connection: SshConnection | undefined;
  const connect = (sftp: SFTPWrapper | undefined) => {
    if (connection) return connection;
    void hideSecrets();
    linked = true;
    // A connection for commands only has no SFTP server to wait for.
    const answered = sftp && started;
    const link = new OpenSshLink(master, sftp, diagnostics, options, exited, reported, answered);
    const info: ConnectionInfo = {
      server: diagnostics.match(/remote software version (\S+)/) ?? "unknown server",
      cipher: diagnostics.match(/kex: client->server cipher: (\S+)/) ?? "unknown cipher",
      hostKey: hostKeyInfo(diagnostics, setup),
      auth: authInfo(diagnostics),
    };
    return connection = new SshConnection(link, { ...options, target: setup.target }, info);
  };
  // OpenSSH goes on with a revoked key under StrictHostKeyChecking=no; the builtin client never
  // does, and neither do we.
  const revoked = () => diagnostics.match(/(REVOKED HOST KEY)/i) !== undefined;
  let settled = false;
  const onEarly = options.onEarlyConnection;
  if (session && onEarly) {
    void Promise.all([session, authenticated]).then(([{ sftp }]) => {
      if (!settled && !revoked()) onEarly(connect(sftp));
    }, () => {});
  }
  let abort!: () => void;
  const aborted = new Promise<"aborted">((resolve) => abort = () => resolve("aborted"));
  if (options.signal?.aborted) abort();
  options.signal?.addEventListener("abort", abort, { once: true });
  const first = await Promise.race([
    started.then(
      (sftp) => ({ sftp }),
      (error) => error instanceof TextBeforeSftpError ? error : "failed" as const,
    ),
    exited.then(() => "exited" as const),
    timedOut,
    aborted,
  ]);
  settled = true;
  clearTimeout(timer);
  options.signal?.removeEventListener("abort", abort);
  if (typeof first === "object" && !(first instanceof TextBeforeSftpError)) {
    if (revoked()) {
      await stop(master, exited);
      throw hostKeyError(where, diagnostics, setup);
    }
    const up = connect(first.sftp);
    if (first.sftp) options.onSftpStarted?.();
    options.log.debug(
      `connected to ${setup.target} (${up.info.server}, ${up.info.cipher}, ${up.info.auth}, OpenSSH client)`,
    );
    return up;
  }
  // The session did not start: a connection handed out early is lost with it (its calls fail).
  if (first === "aborted") {
    await stop(master, exited);
    throw closedDuringLogin(where);
  }
  const notSftp = (error: TextBeforeSftpError) =>
    new SftpUnavailableError(`Cannot start SFTP on ${where}: ${error.message}`);
  if (first instanceof TextBeforeSftpError) {
    await stop(master, exited);
    return notSftp(first);
  }
  if (first === "timeout") {
    await stop(master, exited);
    const said = diagnostics.summary();
    throw new TransportError(
      `Cannot connect to ${where}: no SFTP session within ${timeoutMs / 1000} s ` +
        `(3 x Timeout)${said ? `: ${said}` : ""}`,
      "connection",
    );
  }
  // The session failed or ssh exited: ssh's exit status and stderr say why.
  const ended = await Promise.race([exited.then(() => true), delay(2000).then(() => false)]);
  if (!ended) await stop(master, exited);
  // The session reports its end once ssh's exit is known: text it got first is the cause.
  const failure = await Promise.race([started.then(() => undefined, (error) => error), delay(100)]);
  if (failure instanceof TextBeforeSftpError) return notSftp(failure);
  const error = openError(where, diagnostics, master, setup, vessel.timeout);
  if (error instanceof SftpUnavailableError) return error;
  throw error;
}

/** Resolves once ssh listens on its control socket, or rejects if it exits first. */
async function controlSocketReady(path: string, exited: Promise<void>): Promise<void> {
  let gone = false;
  exited.then(() => gone = true);
  while (!gone) {
    try {
      if ((await Deno.lstat(path)).isSocket) return;
    } catch {
      // Not yet.
    }
    await delay(10);
  }
  throw new Error("ssh exited");
}

/**
 * `ssh` running `command` over the connection of the master listening at
 * `controlPath`, and nowhere else. When the master is gone, ssh logs in by
 * itself (ssh -v: "Control socket ... does not exist", then "Connecting
 * to"): a login nobody counts, and the command of a daemon killed meanwhile
 * could run after it, beside its successor's, on the same temp file.
 * ProxyCommand is read only for a connection of ssh's own, and the first
 * value given wins over ssh_config's ProxyCommand and ProxyJump: `false`
 * makes that connection fail at once.
 */
function spawnOverControl(setup: OpenSshSetup, controlPath: string, command: string): ChildProcess {
  return spawnInOwnSession(setup.command, [
    "-o",
    "ProxyCommand=false",
    ...setup.options,
    "-o",
    "ControlMaster=no",
    "-o",
    `ControlPath=${controlPath}`,
    "-T",
    "--",
    setup.host,
    command,
  ], setup.env);
}

/** The `setsid` command, looked up at the first spawn; null where there is none. */
let setsidCommand: string | null | undefined;

/**
 * Starts `command` in a session of its own, where it has no terminal and so
 * nothing can prompt. node's `detached` gets there by forking this whole
 * process to call setsid() before the exec: 2-3 ms of this thread per child
 * in a small process, and 30-52 ms of the daemon's thread for the 10 `ssh` of
 * a 1000 x 16 KiB run (12-18 ms through `setsid`). A `setsid` command is
 * spawned as any other child (a vfork and an exec) and calls setsid() itself;
 * it is no process group leader, so it does not fork, and the child's PID is
 * `command`'s.
 */
export function spawnInOwnSession(
  command: string,
  args: readonly string[],
  env: Record<string, string> | undefined,
  setsid: string | null = setsidCommand ??= findExecutable("setsid") ?? null,
): ChildProcess {
  const stdio: ["pipe", "pipe", "pipe"] = ["pipe", "pipe", "pipe"];
  return setsid === null
    ? spawn(command, args, { stdio, detached: true, env })
    : spawn(setsid, ["--", command, ...args], { stdio, env });
}

/** Runs `command` over the control socket, its stdin closed (a {@linkcode RunCommand}). */
function runEarly(
  options: OpenSshOptions,
  command: string,
  deadlineMs: number,
): Promise<ExecResult> {
  const child = spawnOverControl(options.setup, options.controlPath, command);
  child.stdin!.on("error", () => {});
  child.stdin!.end();
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout!.on("data", (data: Buffer) => stdout.push(data));
  child.stderr!.on("data", (data: Buffer) => stderr.push(data));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      kill(child, "SIGKILL");
      reject(new TransportError(`\`${command}\` ran past its deadline`, "connection"));
    }, deadlineMs);
    child.once("error", (error: Error) => {
      clearTimeout(timer);
      reject(new TransportError(`Cannot run \`${command}\`: ${error.message}`, "connection"));
    });
    child.once("close", (code: number | null, signal: string | null) => {
      clearTimeout(timer);
      const text = (chunks: Buffer[]) => chunks.map((chunk) => chunk.toString()).join("");
      // Status 255 is ssh's own failure: the login went away.
      if (code === 255) {
        reject(
          new TransportError(
            `ssh failed running \`${command}\`: ${text(stderr).trim()}`,
            "connection",
          ),
        );
      } else {
        resolve({
          code: code ?? undefined,
          signal: signal ?? undefined,
          stdout: text(stdout),
          stderr: text(stderr),
        });
      }
    });
  });
}

/**
 * Resolves when `child` has ended: at `close` (its output read to the end), or
 * shortly after `exit` if something else still holds its pipes open (a
 * ProxyCommand's child), so no caller waits on a dead process.
 */
function endOf(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    child.once("close", () => resolve());
    child.once("exit", () => setTimeout(resolve, 1000));
  });
}

/** Ends `child`: SIGTERM, then SIGKILL if it is still there after two seconds. */
async function stop(child: ChildProcess, ended: Promise<void>): Promise<void> {
  kill(child);
  if (await Promise.race([ended.then(() => true), delay(2000).then(() => false)])) return;
  kill(child, "SIGKILL");
  await Promise.race([ended, delay(2000)]);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** ssh2's `Client` as far as {@linkcode SshConnection} uses it, over `ssh` children. */
class OpenSshLink extends EventEmitter implements SshLink {
  readonly #master: ChildProcess;
  readonly #sftp?: SFTPWrapper;
  readonly #options: OpenSshOptions;
  readonly #commands = new Set<ChildProcess>();
  readonly #reported: () => void;
  readonly #exited: Promise<void>;
  readonly sftpAnswered?: Promise<unknown>;
  #lost = false;

  constructor(
    master: ChildProcess,
    sftp: SFTPWrapper | undefined,
    diagnostics: Diagnostics,
    options: OpenSshOptions,
    exited: Promise<void>,
    reported: () => void,
    sftpAnswered: Promise<unknown> | undefined,
  ) {
    super();
    this.#master = master;
    this.#sftp = sftp;
    this.sftpAnswered = sftpAnswered;
    this.#options = options;
    this.#reported = reported;
    this.#exited = exited;
    void exited.then(() => {
      const code = master.exitCode;
      const signal = master.signalCode;
      this.#lose(
        diagnostics.summary() ||
          (signal ? `ssh ended by ${signal}` : `ssh exited with status ${code}`),
      );
    });
  }

  /** Reports the connection lost, once, before anything that used it learns of it otherwise. */
  #lose(why: string): void {
    if (this.#lost) return;
    this.#lost = true;
    this.emit("error", new Error(why));
    this.emit("close");
    this.#reported();
    this.destroy();
  }

  /**
   * Bytes ssh read and wrote (`/proc/PID/io`): its socket, with the window
   * adjusts the vessel sends as its SFTP server takes our writes, and its
   * pipes. ssh takes a small file whole into its buffers at once, so our
   * pipes alone would not move while a slow link carries it. 0 where /proc
   * cannot tell (the SFTP replies alone then judge).
   */
  bytesMoved(): number {
    try {
      const io = Deno.readTextFileSync(`/proc/${this.#master.pid}/io`);
      return Number(/^rchar: (\d+)/m.exec(io)?.[1] ?? 0) +
        Number(/^wchar: (\d+)/m.exec(io)?.[1] ?? 0);
    } catch {
      return 0; // It exited, or this is not Linux.
    }
  }

  /** Pings over the SFTP session (ssh sends no keepalives of its own on it). */
  ping(answered: () => void): boolean {
    if (!this.#sftp) return false;
    this.#sftp.realpath(".", () => answered());
    return true;
  }

  sftp(callback: (error: Error | undefined, sftp: SFTPWrapper) => void): void {
    if (this.#sftp) callback(undefined, this.#sftp);
    else callback(new Error("this connection carries commands only"), undefined as never);
  }

  exec(
    command: string,
    callback: (error: Error | undefined, channel: ClientChannel) => void,
  ): void {
    const start = () => {
      const child = spawnOverControl(this.#options.setup, this.#options.controlPath, command);
      this.#commands.add(child);
      child.once("close", () => this.#commands.delete(child));
      return child;
    };
    const channel = new CommandChannel(
      start,
      (stderr, mayRunAgain) => this.#commandFailed(stderr, mayRunAgain),
    );
    callback(undefined, channel as unknown as ClientChannel);
  }

  /**
   * A command's ssh failed (status 255). The master it borrows the
   * connection from usually ends too, for the same reason, and says why (no
   * reply to its keepalives, a reset): its words are waited for a moment
   * before the command's own. Resolves `true` when the command may run again
   * (see openssh_command.ts): ssh said nothing and the connection is up.
   * Otherwise the connection is lost, and every call on it fails so.
   */
  async #commandFailed(stderr: string, mayRunAgain: boolean): Promise<boolean> {
    // Without its master's socket ssh tries a connection of its own, which fails by design
    // (see spawnOverControl) with words about that connection. A master that removed its
    // socket is usually ending, and its end is known up to a second after it exits.
    const socketGone = await Deno.lstat(this.#options.controlPath).then(() => false, () => true);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#exited,
      new Promise((resolve) => {
        timer = setTimeout(resolve, socketGone ? MASTER_ENDING_MS : MASTER_WORDS_MS);
      }),
    ]);
    clearTimeout(timer);
    if (mayRunAgain && !socketGone && !stderr.trim() && !this.#lost) return true;
    this.#lose(
      socketGone
        ? `ssh failed running a command: the connection's control socket ` +
          `${this.#options.controlPath} is gone`
        : `ssh failed running a command: ${
          stderr.trim() ||
          "the vessel ended its session without an exit status (the command was killed, " +
            "or the server closed the session)"
        }`,
    );
    return false;
  }

  /** Ends the SFTP session; ssh exits once the commands on it have ended. */
  end(): void {
    this.#master.stdin?.end();
  }

  destroy(): void {
    for (const command of this.#commands) kill(command);
    kill(this.#master);
  }
}

/** What ssh wrote to stderr (`-v`): its errors, and what it negotiated. */
class Diagnostics {
  readonly #lines: string[] = [];
  readonly #head: string[] = [];
  #partial = "";
  /** ssh's line saying that the vessel accepted the login, once it came. */
  authenticated?: string;
  onAuthenticated?: () => void;
  readonly #isVesselAuthenticated: (line: string) => boolean;
  onConnected?: (handshakeMs: number) => void;
  /**
   * When ssh said it connects: the time from its start includes its own
   * start-up, which on a busy shore took over 200 ms on loopback (four
   * logins at once on 2 cores) and passed for a long link.
   */
  #connectingAt = performance.now();

  constructor(child: ChildProcess, isVesselAuthenticated: (line: string) => boolean) {
    this.#isVesselAuthenticated = isVesselAuthenticated;
    child.stderr!.on("data", (data: Buffer) => {
      const text = this.#partial + data.toString();
      const lines = text.split(/\r?\n/);
      this.#partial = lines.pop() ?? "";
      for (const line of lines) this.#add(line);
    });
  }

  #add(line: string): void {
    if (this.#head.length < 400) this.#head.push(line);
    if (line.startsWith("debug1: Connecting to ")) this.#connectingAt = performance.now();
    if (line === "debug1: Connection established.") {
      this.onConnected?.(performance.now() - this.#connectingAt);
    }
    if (!this.authenticated && this.#isVesselAuthenticated(line)) {
      this.authenticated = line;
      this.onAuthenticated?.();
    }
    if (line.startsWith("debug") || !line.trim()) return;
    this.#lines.push(line.trim());
    if (this.#lines.length > STDERR_LINES) this.#lines.shift();
  }

  /** Every first capture group of `pattern` in the connection's first lines. */
  matchAll(pattern: RegExp): string[] {
    return this.#head.flatMap((line) => {
      const found = pattern.exec(line);
      return found ? [found[1]] : [];
    });
  }

  /**
   * The first capture group of `pattern` in the last of the connection's
   * first lines it matches, looking at lines `from` on only.
   */
  last(pattern: RegExp, from = 0): string | undefined {
    for (let index = this.#head.length - 1; index >= Math.max(0, from); index--) {
      const found = pattern.exec(this.#head[index]);
      if (found) return found[1];
    }
    return undefined;
  }

  /** Where the last of the connection's first lines that `pattern` matches is (-1: none). */
  lastIndex(pattern: RegExp): number {
    return this.#head.findLastIndex((line) => pattern.test(line));
  }

  /** The first capture group of `pattern` in the connection's first lines. */
  match(pattern: RegExp): string | undefined {
    for (const line of this.#head) {
      const found = pattern.exec(line);
      if (found) return found[1];
    }
    return undefined;
  }

  /** ssh's own complaints (not its debug lines), joined. */
  summary(): string {
    const lines = this.#lines.filter((line) =>
      !/^@+$|^Warning: Permanently added|^Pseudo-terminal|^OpenSSH_.*OpenSSL|^Authenticated to|^Transferred:|^Bytes per second:/
        .test(line)
    );
    return lines.slice(-6).join("; ");
  }
}

/**
 * SFTP could not start on a vessel that let us log in. Calls that need SFTP
 * reject with it; commands still run.
 */
export class SftpUnavailableError extends TransportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "unsupported", options);
    this.name = "SftpUnavailableError";
  }
}

/**
 * What ssh says when the link itself failed: its keepalives went unanswered
 * (ServerAliveCountMax), the peer reset or closed the TCP connection, or the
 * network went away.
 */
const LINK_FAILURE =
  /Timeout, server \S+ not responding|Connection reset|Broken pipe|Connection timed out|Connection closed by|closed by remote host|Network is unreachable|No route to host|packet_write_wait|client_loop: send disconnect/i;

/** Why `ssh` exited before the SFTP session started, coded for the engine. */
function openError(
  where: string,
  diagnostics: Diagnostics,
  master: ChildProcess,
  setup: OpenSshSetup,
  timeout: number,
): TransportError {
  const said = diagnostics.summary();
  const status = master.exitCode;
  if (/unix_listener|ControlSocket|control socket/i.test(said)) {
    // Our private directory was not usable for the control socket: the next try makes it again.
    return new TransportError(
      `Cannot connect to ${where}: ssh cannot listen on its control socket: ${said}`,
      "connection",
    );
  }
  if (diagnostics.authenticated && LINK_FAILURE.test(said)) {
    // Logged in, then the link failed before the session started (a stall: ssh's keepalives
    // went unanswered): the SFTP server is not at fault, and the next try may well work.
    return new TransportError(`Cannot connect to ${where}: ${said}`, "connection");
  }
  if (diagnostics.authenticated) {
    // Logged in, so whatever failed is the SFTP server.
    const why = status === 126 || status === 127 || /Permission denied|not found/i.test(said)
      ? `the vessel cannot run its SFTP server (exit ${status}: ${
        status === 127 ? "not found" : "not executable"
      }); check the Subsystem sftp line of sshd_config${said ? ` (ssh says: ${said})` : ""}`
      : /subsystem request failed/i.test(said)
      ? "the vessel has no SFTP subsystem (sshd_config needs a Subsystem sftp line)"
      : said || `ssh exited with status ${status ?? master.signalCode}`;
    return new SftpUnavailableError(`Cannot start SFTP on ${where}: ${why}`);
  }
  if (
    /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|has changed and you have requested strict|revoked|No \S+ host key is known/i
      .test(said)
  ) {
    return hostKeyError(where, diagnostics, setup);
  }
  if (
    /Permission denied|Too many authentication failures|No more authentication methods/i.test(said)
  ) {
    const tried = triedMethods(diagnostics);
    return new TransportError(
      `Cannot log in to ${where}: authentication refused${
        tried.length > 0 ? ` (tried ${tried.join(", ")})` : ""
      }; ssh says: ${said}`,
      "auth",
    );
  }
  if (
    /Bad configuration option|bad configuration options|Bad owner or permissions|Unsupported option|no argument after keyword|Can't open user config file/i
      .test(said)
  ) {
    return new TransportError(
      `Cannot connect to ${where}: ssh cannot use its configuration: ${said}`,
      "unsupported",
    );
  }
  if (/timed out|Connection timed out/i.test(said)) {
    return new TransportError(
      `Cannot connect to ${where}: no SSH handshake within ${timeout} s (Timeout); ssh says: ${said}`,
      "connection",
    );
  }
  return new TransportError(
    `Cannot connect to ${where}: ${
      said || `ssh exited with status ${status ?? master.signalCode}`
    }`,
    "connection",
  );
}

/** A refused host key, described from ssh's own lines. */
function hostKeyError(
  where: string,
  diagnostics: Diagnostics,
  setup: OpenSshSetup,
): TransportError {
  const offered = diagnostics.last(/Server host key: (\S+ \S+)/);
  const offending = diagnostics.last(/Offending \S+ key in (\S+)/);
  const finding = diagnostics.match(/(REVOKED HOST KEY)/i)
    ? "its key is marked @revoked in known hosts"
    : diagnostics.match(/(REMOTE HOST IDENTIFICATION HAS CHANGED)/)
    ? `REMOTE HOST IDENTIFICATION HAS CHANGED${
      offending ? ` (${offending} holds a different key)` : ""
    }: someone could be eavesdropping, or the host key was replaced`
    : "its key is not in known hosts";
  const said = diagnostics.summary();
  return new TransportError(
    `Host key verification failed for ${where}: ${finding}${
      offered ? `; the server offers ${offered}` : ""
    } (StrictHostKeyChecking ${setup.hostKeyPolicy}, known hosts ${setup.knownHosts})${
      said ? `; ssh says: ${said}` : ""
    }`,
    "host-key",
    {},
  );
}

/** The authentication methods ssh tried, named as the builtin client names them. */
function triedMethods(diagnostics: Diagnostics): string[] {
  const tried = diagnostics.matchAll(/(?:Offering public key|Trying private key): (.+)$/).map(
    describeKey,
  );
  if (diagnostics.match(/Next authentication method: (password)/)) tried.push("password");
  if (diagnostics.match(/Next authentication method: (keyboard-interactive)/)) {
    tried.push("keyboard-interactive");
  }
  return [...new Set(tried)];
}

/** `ssh-agent` or `key "PATH"` from ssh's description of a key. */
function describeKey(line: string): string {
  if (/\sagent$/.test(line)) return "ssh-agent";
  return `key ${JSON.stringify(line.split(" ")[0])}`;
}

/** How ssh logged in, named as the builtin client names it. */
function authInfo(diagnostics: Diagnostics): string {
  // The vessel's own line, and its key the last accepted: a jump host's login comes first.
  const method = /using "([^"]+)"/.exec(diagnostics.authenticated ?? "")?.[1] ?? "unknown";
  if (method !== "publickey") return method;
  const key = diagnostics.matchAll(/Server accepts key: (.+)$/).at(-1);
  return key ? describeKey(key) : method;
}

/**
 * The vessel's host key as ssh checked it. Behind jump hosts each one's ssh
 * writes its own key exchange to the same stderr, before the vessel's: the
 * vessel's lines are the last.
 */
function hostKeyInfo(diagnostics: Diagnostics, setup: OpenSshSetup): string {
  const vesselsFrom = diagnostics.lastIndex(/Server host key: /);
  const offered = diagnostics.last(/Server host key: (\S+ \S+)/, vesselsFrom) ?? "unknown key";
  const line = diagnostics.last(/Found key in (\S+)/, vesselsFrom);
  if (diagnostics.last(/(Permanently added)/, vesselsFrom)) {
    return `${offered} (new; added to known hosts)`;
  }
  if (
    setup.hostKeyPolicy === "no" &&
    diagnostics.last(/(REMOTE HOST IDENTIFICATION HAS CHANGED|WARNING)/, vesselsFrom)
  ) {
    return `${offered} (CHANGED; accepted: StrictHostKeyChecking = no)`;
  }
  return `${offered}${line ? ` (${line})` : ""}`;
}

function kill(child: ChildProcess, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(signal);
  } catch {
    // Already gone.
  }
}
