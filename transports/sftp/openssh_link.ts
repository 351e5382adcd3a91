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
import { TransportError, type TransportErrorCode } from "../transport.ts";
import type { ClientChannel, SFTPWrapper } from "./_ssh2.ts";
import { sftpOverPipes } from "./_sftp_pipe.ts";
import { type ConnectionOptions, SshConnection, type SshLink } from "./connection.ts";
import type { ConnectionInfo } from "./handshake.ts";
import type { OpenSshSetup } from "./openssh_setup.ts";

/** Lines of ssh's stderr kept for messages. */
const STDERR_LINES = 40;

/** Options of {@linkcode openOpenSsh}. */
export interface OpenSshOptions extends ConnectionOptions {
  readonly setup: OpenSshSetup;
  /** This connection's control socket, inside `setup.dir`. */
  readonly controlPath: string;
}

/**
 * Starts `ssh` for one connection and resolves once the vessel's SFTP server
 * answered. Rejects with a {@linkcode TransportError} coded from ssh's own
 * words: `"host-key"`, `"auth"`, `"unsupported"` or `"connection"`.
 */
export async function openOpenSsh(options: OpenSshOptions): Promise<SshConnection> {
  const { setup, vessel } = options;
  const where = `vessel "${vessel.name}" (${setup.target})`;
  const hideSecrets = await setup.exposeSecrets();
  const master = spawn(setup.command, [
    ...setup.options,
    "-v",
    "-o",
    "ControlMaster=yes",
    "-o",
    "ControlPersist=no",
    "-o",
    `ControlPath=${options.controlPath}`,
    "-s",
    "--",
    setup.host,
    "sftp",
  ], { stdio: ["pipe", "pipe", "pipe"], detached: true, env: setup.env });
  const diagnostics = new Diagnostics(master);
  diagnostics.onAuthenticated = () => void hideSecrets();
  const exited = new Promise<void>((resolve) => master.once("close", () => resolve()));
  exited.then(hideSecrets);
  const timeoutMs = vessel.timeout * 3000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const started = sftpOverPipes(master.stdin!, master.stdout!, () => master.stdin?.end());
  started.catch(() => {}); // Judged below, from ssh's own words once it exited.
  const first = await Promise.race([
    started.then((sftp) => ({ sftp }), () => "failed" as const),
    exited.then(() => "exited" as const),
    timedOut,
  ]);
  clearTimeout(timer);
  if (typeof first === "object") {
    void hideSecrets();
    const link = new OpenSshLink(master, first.sftp, diagnostics, options);
    const info: ConnectionInfo = {
      server: diagnostics.match(/remote software version (\S+)/) ?? "unknown server",
      cipher: diagnostics.match(/kex: client->server cipher: (\S+)/) ?? "unknown cipher",
      hostKey: hostKeyInfo(diagnostics, setup),
      auth: `${diagnostics.match(/Authenticated to .* using "([^"]+)"/) ?? "unknown"} (OpenSSH)`,
    };
    options.log.debug(
      `connected to ${setup.target} (${info.server}, ${info.cipher}, ${info.auth})`,
    );
    return new SshConnection(link, { ...options, target: setup.target }, info);
  }
  if (first === "timeout") {
    kill(master);
    await exited;
    const said = diagnostics.summary();
    throw new TransportError(
      `Cannot connect to ${where}: no SFTP session within ${timeoutMs / 1000} s ` +
        `(3 x Timeout)${said ? `: ${said}` : ""}`,
      "connection",
    );
  }
  // The session failed or ssh exited: ssh's exit status and stderr say why.
  const ended = await Promise.race([exited.then(() => true), delay(2000).then(() => false)]);
  if (!ended) {
    kill(master);
    await exited;
  }
  throw openError(where, diagnostics, master, setup);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** ssh2's `Client` as far as {@linkcode SshConnection} uses it, over `ssh` children. */
class OpenSshLink extends EventEmitter implements SshLink {
  readonly #master: ChildProcess;
  readonly #sftp: SFTPWrapper;
  readonly #diagnostics: Diagnostics;
  readonly #options: OpenSshOptions;
  readonly #commands = new Set<ChildProcess>();

  constructor(
    master: ChildProcess,
    sftp: SFTPWrapper,
    diagnostics: Diagnostics,
    options: OpenSshOptions,
  ) {
    super();
    this.#master = master;
    this.#sftp = sftp;
    this.#diagnostics = diagnostics;
    this.#options = options;
    master.once("close", (code: number | null, signal: string | null) => {
      for (const command of this.#commands) kill(command);
      const why = diagnostics.summary() ||
        (signal ? `ssh ended by ${signal}` : `ssh exited with status ${code}`);
      this.emit("error", new Error(why));
      this.emit("close");
    });
  }

  sftp(callback: (error: Error | undefined, sftp: SFTPWrapper) => void): void {
    callback(undefined, this.#sftp);
  }

  exec(
    command: string,
    callback: (error: Error | undefined, channel: ClientChannel) => void,
  ): void {
    const { setup, controlPath } = this.#options;
    const child = spawn(setup.command, [
      ...setup.options,
      "-o",
      "ControlMaster=no",
      "-o",
      `ControlPath=${controlPath}`,
      "-T",
      "--",
      setup.host,
      command,
    ], { stdio: ["pipe", "pipe", "pipe"], detached: true, env: setup.env });
    this.#commands.add(child);
    const channel = new CommandChannel(child);
    child.once("close", () => {
      this.#commands.delete(child);
      // ssh's 255 with its own complaint: the shared connection is gone, not the command.
      if (
        child.exitCode === 255 && /mux_client|control socket|ControlPath/i.test(channel.stderrText)
      ) {
        this.destroy();
      }
    });
    callback(undefined, channel as unknown as ClientChannel);
  }

  /** Ends the SFTP session; ssh exits once the commands on it have ended. */
  end(): void {
    this.#master.stdin?.end();
  }

  destroy(): void {
    for (const command of this.#commands) kill(command);
    kill(this.#master);
  }

  get diagnostics(): string {
    return this.#diagnostics.summary();
  }
}

/** An `ssh` child dressed as ssh2's exec channel. */
class CommandChannel extends EventEmitter {
  readonly stderr: EventEmitter;
  stderrText = "";
  readonly #child: ChildProcess;

  constructor(child: ChildProcess) {
    super();
    this.#child = child;
    this.stderr = child.stderr!;
    child.stdin!.on("error", () => {}); // A command that exits early closes its stdin.
    child.stdout!.on("data", (data: Buffer) => this.emit("data", data));
    child.stderr!.on("data", (data: Buffer) => {
      if (this.stderrText.length < 4096) this.stderrText += data.toString();
    });
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.emit("close");
    };
    child.once("exit", (code: number | null, signal: string | null) => {
      this.emit("exit", code, signal ?? undefined);
    });
    child.once("close", close);
    child.once("error", (error: Error) => {
      this.emit("error", error);
      close();
    });
  }

  write(data: string | Uint8Array): boolean {
    return this.#child.stdin!.write(data);
  }

  end(): void {
    this.#child.stdin!.end();
  }
}

/** What ssh wrote to stderr (`-v`): its errors, and what it negotiated. */
class Diagnostics {
  readonly #lines: string[] = [];
  readonly #head: string[] = [];
  #partial = "";
  onAuthenticated?: () => void;

  constructor(child: ChildProcess) {
    child.stderr!.on("data", (data: Buffer) => {
      const text = this.#partial + data.toString();
      const lines = text.split(/\r?\n/);
      this.#partial = lines.pop() ?? "";
      for (const line of lines) this.#add(line);
    });
  }

  #add(line: string): void {
    if (this.#head.length < 400) this.#head.push(line);
    if (line.startsWith("debug1: Authenticated to")) this.onAuthenticated?.();
    if (line.startsWith("debug") || !line.trim()) return;
    this.#lines.push(line.trim());
    if (this.#lines.length > STDERR_LINES) this.#lines.shift();
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
      !/^@+$|^Warning: Permanently added|^Pseudo-terminal/.test(line)
    );
    return lines.slice(-6).join("; ");
  }

  get all(): string {
    return [...this.#lines, this.#partial].join("\n");
  }
}

/** Why `ssh` exited before the SFTP session started, coded for the engine. */
function openError(
  where: string,
  diagnostics: Diagnostics,
  master: ChildProcess,
  setup: OpenSshSetup,
): TransportError {
  const said = diagnostics.summary();
  const status = master.exitCode;
  const offered = diagnostics.match(/Server host key: (\S+ \S+)/);
  let code: TransportErrorCode = "connection";
  let why = said || `ssh exited with status ${status ?? master.signalCode}`;
  if (
    /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key is known|has changed and you have requested strict|revoked/i
      .test(said) || /No \S+ host key is known/.test(said)
  ) {
    code = "host-key";
    why = `host key refused (StrictHostKeyChecking ${setup.hostKeyPolicy}, known hosts ` +
      `${setup.knownHosts})${offered ? `: the server offers ${offered}` : ""}; ssh says: ${said}`;
  } else if (
    /Permission denied|Too many authentication failures|No more authentication methods/i.test(said)
  ) {
    code = "auth";
    why = `authentication refused: ${said}`;
  } else if (status === 126 || status === 127) {
    code = "unsupported";
    why = `the vessel cannot run its SFTP server (exit ${status}: ${
      status === 126 ? "not executable" : "not found"
    }); check the Subsystem sftp line of sshd_config`;
  } else if (/subsystem request failed/i.test(said)) {
    code = "unsupported";
    why = `the vessel has no SFTP subsystem (sshd_config needs a Subsystem sftp line): ${said}`;
  } else if (
    /Bad configuration option|bad configuration options|Bad owner or permissions|Unsupported option|no argument after keyword|Can't open user config file/i
      .test(said)
  ) {
    code = "unsupported";
    why = `ssh cannot use its configuration: ${said}`;
  }
  const action = code === "auth" ? "Cannot log in to" : "Cannot connect to";
  return new TransportError(`${action} ${where}: ${why}`, code, {
    cause: new Error(diagnostics.all),
  });
}

function hostKeyInfo(diagnostics: Diagnostics, setup: OpenSshSetup): string {
  const offered = diagnostics.match(/Server host key: (\S+ \S+)/) ?? "unknown key";
  const line = diagnostics.match(/Found key in (\S+)/);
  if (diagnostics.match(/(Permanently added)/)) return `${offered} (new; added to known hosts)`;
  if (
    setup.hostKeyPolicy === "no" &&
    diagnostics.match(/(REMOTE HOST IDENTIFICATION HAS CHANGED|WARNING)/)
  ) {
    return `${offered} (CHANGED; accepted: StrictHostKeyChecking = no)`;
  }
  return `${offered}${line ? ` (${line})` : ""}`;
}

function kill(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
}
