/**
 * A remote command run by an `ssh` child over a connection's control socket,
 * dressed as ssh2's exec channel.
 *
 * Such an ssh cannot tell a command the vessel never ran from one that died:
 * when the vessel closes the session without an exit status, ssh exits 255
 * and says nothing. Dropbear 2022.83 to 2024.85 closes a session that opens
 * while another session's process exits, before its command starts (Dropbear
 * #321, fixed in 2024.86); the builtin client sees the same race as a refused
 * exec request and asks again (connection.ts). So a command that printed
 * nothing before such an end runs once more, given again what it was sent,
 * if its connection is still up. A command killed by a signal before it
 * printed anything looks the same; every command the transport runs starts
 * over from its inputs (its temp file is removed and made again), so a
 * second run is safe.
 *
 * @module
 */
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { Buffer } from "node:buffer";

/** ssh's status when ssh itself failed; our commands never exit with it. */
const SSH_FAILED = 255;
/** Input kept to send a command again; past this, a silent end is not retried. */
const REPLAY_BYTES = 64 << 10;
/** ssh's words kept for the message of a failure. */
const STDERR_CHARS = 2048;

/**
 * Decides about a command whose ssh failed: resolves `true` to run it again
 * (only ever when `mayRunAgain`), `false` once the connection has been
 * reported lost.
 */
export type SshFailed = (stderr: string, mayRunAgain: boolean) => Promise<boolean>;

/** A command's `ssh` children (a second one only if the first ended silently). */
export class CommandChannel extends EventEmitter {
  readonly stderr = new EventEmitter();
  readonly #start: () => ChildProcess;
  readonly #sshFailed: SshFailed;
  #child!: ChildProcess;
  /** What the command was sent, until it prints or is sent too much: `undefined` then. */
  #sent: Buffer[] | undefined = [];
  #sentBytes = 0;
  #ended = false;
  #ranAgain = false;
  #closed = false;

  constructor(start: () => ChildProcess, sshFailed: SshFailed) {
    super();
    this.#start = start;
    this.#sshFailed = sshFailed;
    this.#run();
  }

  write(data: string | Uint8Array): boolean {
    if (this.#sent) {
      const copy = Buffer.from(data);
      this.#sentBytes += copy.length;
      if (this.#sentBytes <= REPLAY_BYTES) this.#sent.push(copy);
      else this.#sent = undefined;
    }
    return this.#child.stdin!.write(data);
  }

  end(): void {
    this.#ended = true;
    this.#child.stdin!.end();
  }

  #run(): void {
    const child = this.#child = this.#start();
    let stderr = "";
    child.stdin!.on("error", () => {}); // A command that exits early closes its stdin.
    child.stdout!.on("data", (data: Buffer) => {
      this.#sent = undefined;
      this.emit("data", data);
    });
    child.stderr!.on("data", (data: Buffer) => {
      this.#sent = undefined;
      if (stderr.length < STDERR_CHARS) stderr += data.toString();
      this.stderr.emit("data", data);
    });
    child.once("exit", (code: number | null, signal: string | null) => {
      // ssh's own failure is reported, or not at all if the command runs again, at close.
      if (code !== SSH_FAILED) this.emit("exit", code, signal ?? undefined);
    });
    child.once("close", () => {
      if (child.exitCode !== SSH_FAILED) return this.#close();
      const mayRunAgain = this.#sent !== undefined && !this.#ranAgain;
      void this.#sshFailed(stderr, mayRunAgain).then((again) => {
        if (!again) {
          this.emit("exit", SSH_FAILED, undefined);
          return this.#close();
        }
        this.#ranAgain = true;
        const sent = this.#sent ?? [];
        this.#sent = undefined;
        this.#run();
        for (const data of sent) this.#child.stdin!.write(data);
        if (this.#ended) this.#child.stdin!.end();
      }, () => this.#close());
    });
    child.once("error", (error: Error) => {
      this.emit("error", error);
      this.#close();
    });
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.emit("close");
  }
}
