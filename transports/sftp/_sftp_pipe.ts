/**
 * SFTP over a pair of pipes (the stdin and stdout of `ssh -s HOST sftp`), by
 * ssh2's own SFTP client class. That class only needs from its SSH channel a
 * way to send data (`_protocol.channelData`), to close (`channelClose`) and
 * an outgoing window; this module provides those, so every SFTP call of the
 * transport works the same over the OpenSSH client as over ssh2's own SSH.
 *
 * It relies on internals of ssh2 1.17.0 (pinned in deno.json):
 * `_sftp_pipe_test.ts` fails loudly when they change.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Readable, Writable } from "node:stream";
// @ts-types="./_sftp_class.d.ts"
import sftpModule from "ssh2/lib/protocol/SFTP.js";
import type { SFTPWrapper } from "./_ssh2.ts";
import { textBeforeSftp, TextBeforeSftpError } from "./text_before_sftp.ts";

/**
 * Bytes queued for the pipe before ssh2 is asked to hold further requests.
 * Stopping at node's 16 KiB mark made every 256 KiB write wait for a drain
 * (161 MiB/s on loopback, 216 without a limit); this keeps the pipe busy and
 * the queue, which node joins into one buffer at each drain, small.
 */
const PIPE_QUEUE = 4 << 20;
/** Requests smaller than this are joined with those made in the same turn; larger go alone. */
const JOIN_BELOW = 64 << 10;

/** The internals of ssh2's SFTP class this module uses. */
interface SftpInternals {
  _init(): void;
  /** Set by ssh2 while it holds payloads back for want of window. */
  _chunkcb?: () => void;
  _waitWindow: boolean;
  push(data: Buffer | null): void;
  /** -1 until the server's VERSION arrived. */
  _version: number;
  emit(event: string, ...args: unknown[]): boolean;
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  readonly outgoing: { state: string };
}

/** An SFTP session over pipes: see {@linkcode sftpOverPipes}. */
export interface PipeSession {
  /**
   * Takes requests at once: they leave right behind the INIT, a round trip
   * before the server's VERSION could bring them (0.6 s on a satellite
   * link). The server handles them after the INIT, in order; their replies
   * follow its VERSION.
   */
  readonly sftp: SFTPWrapper;
  /**
   * Resolves once the server answered the version exchange (its extensions
   * are known from then on); rejects if the session ends first, with a
   * {@linkcode TextBeforeSftpError} when text came instead of SFTP.
   */
  readonly answered: Promise<void>;
}

/**
 * Starts an SFTP session on `input` (requests to the server) and `output`
 * (its replies). `close` is called when the session ends from our side. The
 * session emits `close` when `output` has ended and `ended` resolved (the
 * carrier's exit, so that its reason is known first).
 */
export function sftpOverPipes(
  input: Writable,
  output: Readable,
  close: () => void,
  ended: Promise<void> = Promise.resolve(),
): PipeSession {
  const open = Number.MAX_SAFE_INTEGER;
  const outgoing = {
    id: 0,
    // The pipe is the window: open while it takes data, shut while it is full, so
    // ssh2 keeps the requests (without copying) instead of node's stream, which
    // would join them into one buffer at every drain (a copy of everything queued).
    window: open,
    packetSize: 1 << 20,
    state: "open",
  };
  // Small requests made in one turn leave in one write: one wakeup of ssh, not one each.
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const flush = () => {
    if (pending.length === 0) return;
    const chunks = pending;
    pending = [];
    pendingBytes = 0;
    input.write(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
  };
  const protocol = {
    // ssh2 sizes reads and writes by the server's name until limits@openssh.com
    // (OpenSSH's sftp-server 8.7+, also under Dropbear) gives the real limits;
    // an unnamed server gets its safe 34000 bytes meanwhile.
    _remoteIdentRaw: "SSH-2.0-unknown",
    channelData(_id: number, data: Uint8Array) {
      if (data.byteLength >= JOIN_BELOW) {
        flush();
        input.write(data);
      } else {
        pending.push(data);
        pendingBytes += data.byteLength;
        if (pending.length === 1) queueMicrotask(flush);
      }
      if (input.writableLength + pendingBytes >= PIPE_QUEUE) outgoing.window = 0;
    },
    channelClose(_id: number) {
      flush();
      outgoing.state = "closed";
      close();
    },
  };
  const sftp = new sftpModule.SFTP({ _protocol: protocol }, {
    type: "sftp",
    incoming: { id: 0, window: Number.MAX_SAFE_INTEGER, packetSize: 1 << 20, state: "open" },
    outgoing,
  }, {}) as unknown as SftpInternals;
  let finished = false;
  const end = () => {
    if (finished) return;
    finished = true;
    outgoing.state = "closed";
    void ended.then(() => {
      sftp.push(null); // Fails every pending request.
      sftp.emit("close");
    });
  };
  let versioned: (() => void) | undefined;
  // What came before the VERSION, to tell why a session never started.
  let head: Buffer | undefined = Buffer.alloc(0);
  output.on("data", (data: Buffer) => {
    if (head && head.length < 256) head = Buffer.concat([head, data]);
    sftp.push(data);
    versioned?.();
  });
  output.on("end", end);
  output.on("close", end);
  output.on("error", end);
  input.on("error", () => close());
  input.on("drain", () => {
    outgoing.window = open;
    if (sftp._waitWindow) {
      sftp._waitWindow = false;
      sftp._chunkcb?.();
    }
  });
  const answered = new Promise<void>((resolve, reject) => {
    // Requests may follow the server's VERSION at once. ssh2 then asks limits@openssh.com and
    // says "ready" only once that is answered: a round trip more before every session's first
    // request (0.6 s on a satellite link). Requests made meanwhile get its safe default sizes.
    versioned = () => {
      if (sftp._version === -1) return;
      versioned = head = undefined;
      resolve();
    };
    const fail = (error: Error) => {
      const text = head && textBeforeSftp(head);
      reject(text ? new TextBeforeSftpError(text) : error);
    };
    sftp.once("ready", () => resolve());
    sftp.once("error", (error) => fail(error as Error));
    sftp.once("close", () => fail(new Error("the SFTP session ended before it started")));
  });
  sftp._init();
  return { sftp: sftp as unknown as SFTPWrapper, answered };
}

/** Whether the SFTP internals this module needs are where it expects them. */
export function sftpInternalsPresent(): string[] {
  const missing: string[] = [];
  const proto = sftpModule.SFTP?.prototype as Record<string, unknown> | undefined;
  if (typeof sftpModule.SFTP !== "function") missing.push("SFTP class");
  for (const method of ["_init", "push", "open", "write", "ext_openssh_rename"]) {
    if (typeof proto?.[method] !== "function") missing.push(`SFTP.prototype.${method}`);
  }
  return missing;
}
