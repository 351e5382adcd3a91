/**
 * One SSH connection to a vessel that cannot hang: a handshake timeout, SFTP
 * requests failed after `Timeout` seconds without any reply, commands failed
 * after a deadline, keepalives while idle, and every pending call rejected
 * with code `"connection"` when the connection closes ('close' is the only
 * event that always fires). Exec output is always drained.
 *
 * Liveness is judged by progress: while SFTP calls are in flight, a reply
 * or bytes the link moved (see {@linkcode SshLink.bytesMoved}) within
 * `Timeout`, on this connection or another over the same link, keep the
 * connection alive, so a slow link that keeps taking data is never taken
 * for dead, even when one write's reply takes longer than `Timeout` (a
 * 255 KiB request over a share of 48 KiB/s). A connection with no progress
 * of its own for {@linkcode ALONE_TIMEOUTS} `Timeout`s goes all the same. Commands
 * have deadlines. A keepalive's reply waits behind every byte queued before
 * it (megabytes on a slow link), so keepalives go out, and are judged, only
 * while nothing is in flight.
 *
 * @module
 */
import type { ClientChannel, SFTPWrapper } from "./_ssh2.ts";
import { Buffer } from "node:buffer";
import { errorMessage } from "../../lib/error_message.ts";
import type { SftpVessel } from "./options.ts";
import {
  partBytes,
  type PartData,
  TransportError,
  type TransportLogger as Logger,
} from "../transport.ts";
import type { ConnectionInfo, ConnectOptions } from "./handshake.ts";
import { textBeforeSftpIn } from "./text_before_sftp.ts";

export type { ConnectionInfo, ConnectOptions } from "./handshake.ts";

/** The outcome of a remote command. */
export interface ExecResult {
  /** Exit status; `undefined` if the command died of a signal or sent none. */
  readonly code: number | undefined;
  readonly signal: string | undefined;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command on the vessel and resolves once it ended: {@linkcode SshConnection.exec},
 * or a login's commands before its SFTP session is up. Rejects with `"connection"` if
 * the link fails or `deadlineMs` passes.
 */
export type RunCommand = (command: string, deadlineMs: number) => Promise<ExecResult>;

/** An SFTP status error as ssh2 reports it (`code` is the SFTP status). */
export interface SftpStatusError extends Error {
  code?: number | string;
}

/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
export const SFTP_STATUS = {
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  OP_UNSUPPORTED: 8,
} as const;

/** Whether `error` is an SFTP status error with `status`. */
export function hasStatus(error: unknown, status: number): boolean {
  return error instanceof Error && (error as SftpStatusError).code === status;
}

/**
 * Bytes of write requests in flight per file. OpenSSH's channel window is
 * 2 MiB and a connection carries two parts at once, so more only waits in
 * buffers, as copies: with 2 MiB, 1 GiB on loopback peaked at 177 MiB RSS
 * on four connections, with 1 MiB at 128 MiB, at the same speed.
 */
const WRITE_WINDOW = 1 << 20;
/**
 * The write request a connection starts with: at 2 KiB/s (a narrowband
 * satellite or radio link) two of them cross in 8 s, within `Timeout`; 4 KiB
 * ones cost a fast link about 5 % more time for many small files.
 */
const FIRST_WRITE = 8 << 10;
/** The smallest write request a slow connection's rate sizes. */
const MIN_WRITE = 4 << 10;
/**
 * Bytes of writes a new connection leaves unanswered: about TCP's first
 * window (10 segments), so a fast link loses no round trip to it, while a
 * 2 KiB/s one answers the first within `Timeout`. The vessel decodes
 * nothing of an SSH packet until all of it has arrived, and `ssh` packs
 * what waits in its pipe into packets of up to 32 KiB: with a file's
 * writes all queued at once, the first reply over 2 KiB/s came after 16 s,
 * and the connection was taken for dead before it.
 */
const FIRST_UNANSWERED = 16 << 10;
/** The fewest bytes of writes a slow connection leaves unanswered: two requests. */
const MIN_UNANSWERED = 2 * MIN_WRITE;
/** The most: above what a connection's two parts and its small files keep in flight. */
const MAX_UNANSWERED = 4 * WRITE_WINDOW;
/** Bytes of writes answered before a connection's own rate sizes its writes. */
const WRITE_RATE_MEASURED = 64 << 10;
/**
 * Replies a connection's writes get per `Timeout` at least, at the rate its
 * writes were answered: each reply shows the link alive (see #watch).
 */
const WRITE_REPLIES_PER_TIMEOUT = 4;
/**
 * How long after a refused command or subsystem request it is asked again,
 * once: Dropbear under load refuses one now and then (CHANNEL_FAILURE: 3 to
 * 6 of 36 runs of a test batching small files, three at once on two cores),
 * where a vessel that truly cannot run it refuses the second ask too.
 */
const REFUSED_REQUEST_RETRY_MS = 50;
/** Most commands a connection runs at once (OpenSSH allows 10 sessions). */
const MAX_EXECS = 8;
/** Most bytes of command output kept; the rest is drained and dropped. */
const MAX_OUTPUT = 1 << 20;

/**
 * A command started by {@linkcode SshConnection.spawn}, whose stdin stays
 * open until {@linkcode RunningCommand.end}.
 */
export interface RunningCommand {
  /** Writes `text` to the command's stdin; ignored once stdin was closed. */
  write(text: string): void;
  /** Closes the command's stdin: a command reading it gets end of file. */
  end(): void;
  /**
   * Moves the deadline to `at` (milliseconds since the epoch), or removes it
   * while the command only waits for input. Past it the connection is dropped
   * and `result` rejects with code `"connection"`.
   */
  setDeadline(at: number | undefined): void;
  /** Settles when the channel closes, like {@linkcode SshConnection.exec}. */
  readonly result: Promise<ExecResult>;
}

/** Options of {@linkcode SshConnection.spawn}. */
export interface SpawnOptions {
  /** Milliseconds the command may run until {@linkcode RunningCommand.setDeadline} moves it. */
  readonly deadlineMs: number;
  /** Receives stdout as it arrives; `result.stdout` is then empty. */
  readonly onStdout?: (data: Uint8Array) => void;
}

/**
 * The part of ssh2's `Client` a connection uses. The OpenSSH carrier
 * ({@link ./openssh_link.ts}) provides the same over `ssh` child processes.
 */
export interface SshLink {
  on(event: "error", listener: (error: Error) => void): unknown;
  on(event: "close", listener: () => void): unknown;
  once(event: "close", listener: () => void): unknown;
  sftp(callback: (error: Error | undefined, sftp: SFTPWrapper) => void): unknown;
  exec(
    command: string,
    callback: (error: Error | undefined, channel: ClientChannel) => void,
  ): unknown;
  end(): unknown;
  destroy(): unknown;
  /**
   * A count that grows while the link moves data: bytes the vessel sent
   * (replies, and the window adjusts it sends as it takes our writes), or
   * every byte the carrier process read or wrote. Nothing else may move it
   * while SFTP calls are in flight (no keepalives then). Absent, only
   * replies count.
   */
  bytesMoved?(): number;
  /**
   * Sends a keepalive, and says whether it could; `answered` hears its
   * reply. Absent, an idle link is not probed.
   */
  ping?(answered: () => void): boolean;
  /**
   * Settles once the SFTP server answered the version exchange, where
   * {@linkcode sftp} answers before that (requests then leave with the
   * session's start); its extensions are known only from then on. Absent,
   * `sftp` answers once they are.
   */
  readonly sftpAnswered?: Promise<unknown>;
}

/** What a connection needs besides its link. */
export interface ConnectionOptions {
  readonly vessel: SftpVessel;
  readonly log: Logger;
  /** `user@host:port` as the carrier resolved it (ssh_config may change all three). */
  readonly target?: string;
  /** Counts the bytes of every write the vessel acknowledges (shared by a transport's connections). */
  readonly acknowledged?: ByteCounter;
  /** Shared by a transport's connections: see {@linkcode LinkProgress}. */
  readonly linkProgress?: LinkProgress;
  /** Ends the login if it is still under way (the transport closes). */
  readonly signal?: AbortSignal;
}

/** A running total of bytes. */
export interface ByteCounter {
  bytes: number;
}

/**
 * When any connection over one link (a transport's, to one vessel) last saw
 * progress: its connections share the link's rate, and sixteen of them on a
 * 128 KiB/s link each see a reply or a window adjust only every 12 s or so.
 */
export interface LinkProgress {
  at: number;
}

/**
 * How many `Timeout`s a connection may go without progress of its own while
 * others over its link progress: a stream that crawls, or stuck in TCP's
 * backoff, is then dropped all the same.
 */
const ALONE_TIMEOUTS = 4;

interface Pending {
  fail(error: TransportError): void;
  /** Commands only: when the command has run too long. */
  deadline?: number;
}

/** A connected, authenticated SSH connection with a lazily opened SFTP session. */
export class SshConnection {
  /** What was negotiated; see {@linkcode ConnectionInfo}. */
  readonly info: ConnectionInfo;
  readonly #client: SshLink;
  readonly #vessel: SftpVessel;
  readonly #target: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #acknowledged: ByteCounter;
  readonly #linkProgress: LinkProgress;
  /** Buffers that source bytes pass through on their way into write requests. */
  readonly #scratch = new ScratchBuffers();
  #roundTripMs?: number;
  readonly #pending = new Set<Pending>();
  readonly #watchdog: ReturnType<typeof setInterval>;
  readonly #watchEveryMs: number;
  #sftp?: Promise<SFTPWrapper>;
  #sftpOpen?: SFTPWrapper;
  /** The SFTP server answered the version exchange (see {@linkcode SshLink.sftpAnswered}). */
  #sftpAnswered = false;
  #closed?: TransportError;
  #socketClosed = false;
  #lastError?: Error;
  #sftpInFlight = 0;
  /** When an SFTP call in flight last saw a reply (or when the first was made). */
  #lastReply = Date.now();
  /** When the link last moved bytes while replies were late. */
  #lastMoved = 0;
  /** The link's count of moved bytes at the last check while replies were late. */
  #movedSeen?: number;
  /** When the connection last became idle (no call in flight). */
  #idleSince = Date.now();
  /** The keepalive awaiting its reply, if any. */
  #ping?: { readonly sentAt: number };
  #execs = 0;
  /** Bytes of writes answered, and the time writes were in flight, for {@linkcode writeLength}. */
  #writesAnswered = 0;
  #writesBusyMs = 0;
  #writesInFlight = 0;
  #writesSince = 0;
  /**
   * Bytes of write requests sent and not answered, and how many may be:
   * the limit grows by twice each answer that waited at most a quarter of
   * `Timeout` beyond the round trip (ahead of TCP's slow start, which
   * doubles per round trip), and shrinks to what was answered in that time
   * when answers wait longer, so that on a link slow in bytes per second
   * what is queued before a request (a write, a command) crosses in that.
   */
  #unanswered = 0;
  #unansweredLimit = FIRST_UNANSWERED;
  readonly #roomWaiters: (() => void)[] = [];
  readonly #execWaiters: (() => void)[] = [];

  /** Wraps a link that is connected and authenticated; {@linkcode open} makes one with ssh2. */
  constructor(client: SshLink, options: ConnectionOptions, info: ConnectionInfo) {
    this.#client = client;
    this.#vessel = options.vessel;
    this.#target = options.target ??
      `${options.vessel.username}@${options.vessel.address}:${options.vessel.port}`;
    this.#log = options.log;
    this.#timeoutMs = options.vessel.timeout * 1000;
    this.#acknowledged = options.acknowledged ?? { bytes: 0 };
    this.#linkProgress = options.linkProgress ?? { at: 0 };
    this.info = info;
    if (client.sftpAnswered) {
      void client.sftpAnswered.then(() => this.#sftpAnswered = true, () => {});
    } else this.#sftpAnswered = true;
    client.on("error", (error: Error) => {
      this.#lastError = error;
    });
    client.on("close", () => {
      this.#socketClosed = true;
      const why = this.#lastError ? `: ${this.#lastError.message}` : "";
      this.#shutDown(
        new TransportError(`Connection to ${this.where} closed${why}`, "connection", {
          cause: this.#lastError,
        }),
      );
    });
    this.#watchEveryMs = Math.max(100, Math.min(1000, this.#timeoutMs / 4));
    this.#watchdog = setInterval(() => this.#watch(), this.#watchEveryMs);
  }

  /** `vessel "web1" (root@host:port)`, for messages. */
  get where(): string {
    return `vessel "${this.#vessel.name}" (${this.#target})`;
  }

  /** `user@host:port` as the carrier resolved them. */
  get target(): string {
    return this.#target;
  }

  /** Whether the connection has closed; a closed connection is not reused. */
  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Calls in progress on this connection. */
  get load(): number {
    return this.#pending.size;
  }

  /**
   * Connects, verifies the host key and authenticates. Rejects with a
   * {@linkcode TransportError}: `"connection"`, `"host-key"` or `"auth"`.
   */
  static async open(options: ConnectOptions): Promise<SshConnection> {
    // ssh2's client loads only for the builtin client: a daemon over OpenSSH starts sooner.
    const { handshake } = await import("./handshake.ts");
    return await handshake(options, (client, info) => new SshConnection(client, options, info));
  }

  /**
   * The SFTP server answered the version exchange: false while a connection
   * handed out during its login still starts its session, and for good if
   * that never started.
   */
  get sftpStarted(): boolean {
    return this.#sftpAnswered;
  }

  /** Marks SFTP as impossible on this connection: every SFTP call rejects with `error`. */
  sftpUnavailable(error: TransportError): void {
    this.#sftp = Promise.reject(error);
    this.#sftp.catch(() => {});
  }

  /** The SFTP session, opened on first use. */
  sftp(): Promise<SFTPWrapper> {
    this.#sftp ??= this.#track<SFTPWrapper>("start the SFTP subsystem", true, (done) => {
      askAgainIfRefused<SFTPWrapper>((asked) => this.#client.sftp(asked), (error, sftp) => {
        if (error) return done(error);
        // Without a listener, an 'error' event would crash the process.
        sftp.on("error", (error: Error) => {
          this.#log.warn(`SFTP protocol error on ${this.where}: ${error.message}`);
          this.destroy(error);
        });
        sftp.on("close", () => {
          if (!this.closed) {
            this.#log.warn(`SFTP session on ${this.where} ended; reconnecting on next use`);
            this.destroy(new Error("the SFTP session ended"));
          }
        });
        this.#sftpOpen = sftp;
        done(undefined, sftp);
      });
    }).catch((error) => {
      this.#sftp = undefined;
      if (error instanceof TransportError) throw error;
      const status = (error as SftpStatusError).code;
      const why = status === 126 || status === 127
        ? `the vessel cannot run its SFTP server (exit ${status}: ${
          status === 126 ? "not executable" : "not found"
        }); check the Subsystem sftp line of sshd_config`
        : /Unable to start subsystem/i.test(error.message)
        ? "the vessel has no SFTP subsystem (sshd_config needs a Subsystem sftp line)"
        : textBeforeSftpIn(error.message) ?? error.message;
      throw new TransportError(`Cannot start SFTP on ${this.where}: ${why}`, "unsupported", {
        cause: error,
      });
    });
    return this.#sftp;
  }

  /** The largest write the SFTP server accepts in one request. */
  async maxWriteLength(): Promise<number> {
    const sftp = await this.sftp();
    const length = (sftp as unknown as { _maxWriteLen?: number })._maxWriteLen;
    return typeof length === "number" && length > 0 ? length : 32 * 1024;
  }

  /**
   * Bytes per write request: as many as the server takes, fewer while this
   * connection's writes are answered slowly, so that a reply comes at least
   * {@linkcode WRITE_REPLIES_PER_TIMEOUT} times per `Timeout`. Sixteen
   * connections sharing 128 KiB/s answer a 255 KiB write only every 32 s,
   * and the vessel's window adjusts come every 96 KiB: the link would look
   * dead. {@linkcode FIRST_WRITE} until the rate is known.
   */
  async writeLength(): Promise<number> {
    const max = await this.maxWriteLength();
    const busyMs = this.#writesBusyMs +
      (this.#writesInFlight > 0 ? performance.now() - this.#writesSince : 0);
    if (this.#writesAnswered < WRITE_RATE_MEASURED || busyMs <= 0) {
      return Math.min(max, FIRST_WRITE);
    }
    const fits = this.#writesAnswered / busyMs * this.#timeoutMs / WRITE_REPLIES_PER_TIMEOUT;
    return Math.min(max, Math.max(MIN_WRITE, Math.floor(fits / MIN_WRITE) * MIN_WRITE));
  }

  /**
   * Writes `length` bytes of `source` from `sourceOffset` at `offset` of
   * the open `handle`, in one request (at most {@linkcode maxWriteLength}).
   * `copied` hears that ssh2 copied the bytes into its request: `source`
   * may be used again.
   */
  write(
    handle: Buffer,
    source: Buffer,
    sourceOffset: number,
    length: number,
    offset: number,
    copied?: () => void,
  ): Promise<void> {
    const sentAt = performance.now();
    this.#unanswered += length;
    if (this.#writesInFlight++ === 0) this.#writesSince = sentAt;
    const ended = (answered: number) => {
      this.#writesAnswered += answered;
      const now = performance.now();
      if (--this.#writesInFlight === 0) this.#writesBusyMs += now - this.#writesSince;
      this.#unanswered -= length;
      if (answered > 0) this.#sizeUnanswered(length, now - sentAt);
      for (const wake of this.#roomWaiters.splice(0)) wake();
    };
    return this.request<void>("write", (sftp, done) => {
      try {
        sftp.write(handle, source, sourceOffset, length, offset, (error) => done(error));
      } finally {
        copied?.();
      }
    }).then(() => ended(length), (error) => {
      ended(0);
      throw error;
    });
  }

  /** Whether writes of `length` bytes in all fit beside those unanswered now. */
  hasWriteRoom(length: number): boolean {
    return this.#unanswered + length <= this.#unansweredLimit;
  }

  /**
   * `undefined` when a write of `length` bytes may be sent now; otherwise a
   * promise that resolves when an answer made room (ask again: others may
   * have taken it) or the connection closed. Writers ask before each
   * {@linkcode write}, which sends at once, so requests keep their order.
   */
  writeRoom(length: number): Promise<void> | undefined {
    if (this.#unanswered === 0 || this.hasWriteRoom(length)) return undefined;
    if (this.#closed) return undefined; // the write fails on its own
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /** Sizes {@linkcode #unansweredLimit} by a write of `length` answered after `waitedMs`. */
  #sizeUnanswered(length: number, waitedMs: number): void {
    const quarter = this.#timeoutMs / WRITE_REPLIES_PER_TIMEOUT;
    // The time it waited behind other bytes: a long round trip alone is no reason to send less.
    const queuedMs = waitedMs - (this.#roundTripMs ?? 0);
    const limit = queuedMs <= quarter
      ? this.#unansweredLimit + 2 * length
      : this.#unansweredLimit * quarter / queuedMs;
    this.#unansweredLimit = Math.min(MAX_UNANSWERED, Math.max(MIN_UNANSWERED, Math.floor(limit)));
  }

  /** The largest read the SFTP server answers in one request. */
  async maxReadLength(): Promise<number> {
    const sftp = await this.sftp();
    const length = (sftp as unknown as { _maxReadLen?: number })._maxReadLen;
    return typeof length === "number" && length > 0 ? length : 32 * 1024;
  }

  /** Whether the SFTP server announced `extension` (e.g. `posix-rename@openssh.com`). */
  async hasExtension(extension: string): Promise<boolean> {
    return announced(await this.#answeredSftp(), extension);
  }

  /**
   * {@linkcode hasExtension} without waiting, once the SFTP server answered
   * (else `undefined`): a request that depends on it can leave in this turn,
   * ahead of requests made after it.
   */
  extensionNow(extension: string): boolean | undefined {
    return this.#sftpAnswered && this.#sftpOpen ? announced(this.#sftpOpen, extension) : undefined;
  }

  /** The SFTP extensions the server announced. */
  async extensions(): Promise<string[]> {
    const sftp = await this.#answeredSftp();
    return Object.keys((sftp as unknown as { _extensions?: object })._extensions ?? {});
  }

  /** The SFTP session once its server answered the version exchange: its extensions are known. */
  async #answeredSftp(): Promise<SFTPWrapper> {
    const sftp = await this.sftp();
    if (!this.#sftpAnswered) {
      // Failing, the login reports why; a call here is lost with the connection, to be tried again.
      await this.#client.sftpAnswered?.catch((error) => {
        throw this.#closed ?? new TransportError(
          `Cannot start the SFTP subsystem on ${this.where}: ${errorMessage(error)}`,
          "connection",
          { cause: error },
        );
      });
    }
    return sftp;
  }

  /**
   * Runs one SFTP request; rejects with the server's status error or
   * `"connection"`. Once the SFTP session is open (after `await sftp()`),
   * requests go out in the order of the calls, without waiting for replies:
   * the server processes requests on the same file in that order.
   */
  request<T>(
    what: string,
    call: (sftp: SFTPWrapper, callback: (error?: Error | null, value?: T) => void) => void,
  ): Promise<T> {
    const open = this.#sftpOpen;
    const started = performance.now();
    // A request made before the server answered waits for the session's start too.
    const timing = this.#sftpAnswered;
    const timed = (value: T) => {
      // The quickest reply so far is the round trip (others wait behind writes or disks).
      if (timing) {
        this.#roundTripMs = Math.min(this.#roundTripMs ?? Infinity, performance.now() - started);
      }
      return value;
    };
    if (open) return this.#track<T>(what, true, (done) => call(open, done)).then(timed);
    return this.sftp().then((sftp) =>
      this.#track<T>(what, true, (done) => call(sftp, done)).then(timed)
    );
  }

  /** The quickest SFTP reply so far, in milliseconds: about the link's round trip. */
  get roundTripMs(): number | undefined {
    return this.#roundTripMs;
  }

  /**
   * Writes bytes `from..` of `data` (bytes, or a part read as it is sent) to
   * the open handle at the same offsets, with many write requests in flight
   * at once, each as long as the server allows. `allSent` is called once the
   * last write request has been sent, before its answer: requests made after
   * that leave behind it. `ending` is called once what is left to send fits
   * in the writes in flight: requests made then reach the vessel about as
   * the last writes are answered. `acknowledged` hears the bytes of each
   * write answered.
   */
  async writeAll(
    handle: Buffer,
    data: Uint8Array | PartData,
    from = 0,
    options: {
      allSent?: () => void;
      ending?: () => void;
      acknowledged?: (bytes: number) => void;
    } = {},
  ): Promise<void> {
    const end = data.byteLength;
    if (from >= end) {
      options.ending?.();
      return options.allSent?.();
    }
    const chunk = await this.writeLength();
    const window = Math.max(2, Math.ceil(WRITE_WINDOW / chunk));
    let ending = options.ending;
    let next = from;
    /** Requests whose bytes are being read: the last one may leave after `next` passed the end. */
    let reading = 0;
    let failed = false;
    const writer = async () => {
      while (next < end && !failed) {
        const length = Math.min(chunk, end - next);
        const room = this.writeRoom(length);
        if (room) {
          await room;
          continue;
        }
        const offset = next;
        next += length;
        reading++;
        let scratch: Buffer | undefined;
        const giveBack = () => {
          if (scratch) this.#scratch.giveBack(scratch);
          scratch = undefined;
        };
        let bytes: Uint8Array;
        try {
          const read = partBytes(data, offset, length, () => scratch ??= this.#scratch.take(chunk));
          bytes = read instanceof Promise ? await read : read;
        } catch (error) {
          giveBack();
          failed = true;
          throw error;
        } finally {
          reading--;
        }
        if (failed) return giveBack();
        const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const reply = this.write(handle, buffer, 0, length, offset, giveBack);
        if (ending && end - next <= window * chunk) {
          ending();
          ending = undefined;
        }
        if (next >= end && reading === 0) options.allSent?.();
        await reply.catch((error) => {
          failed = true; // Issue no more writes; those in flight still finish.
          throw error;
        });
        this.#acknowledged.bytes += length;
        options.acknowledged?.(length);
      }
    };
    const writers = Math.min(window, Math.ceil((end - from) / chunk));
    const results = await Promise.allSettled(Array.from({ length: writers }, writer));
    const rejected = results.find((result) => result.status === "rejected");
    if (rejected) throw (rejected as PromiseRejectedResult).reason;
  }

  /**
   * Runs `command` through the vessel's shell, reading all output, and
   * resolves when the channel closes. Fails with `"connection"` if the
   * connection drops, and is abandoned after `deadlineMs`. The command's
   * stdin is closed at once: a command reading it gets end of file.
   */
  async exec(command: string, deadlineMs: number): Promise<ExecResult> {
    const running = await this.spawn(command, { deadlineMs });
    running.end();
    return await running.result;
  }

  /**
   * Starts `command` through the vessel's shell with its stdin open, and
   * resolves once the channel is open. Output is always drained (a channel
   * whose output is not read never reports its end). Rejects, and later
   * `result` rejects, with `"connection"` if the connection drops or the
   * deadline passes.
   */
  async spawn(command: string, options: SpawnOptions): Promise<RunningCommand> {
    await this.#acquireExec();
    let channel: ClientChannel | undefined;
    let writable = true;
    let tracked: Pending | undefined;
    let opened!: () => void;
    const open = new Promise<void>((resolve) => opened = resolve);
    const result = this.#track<ExecResult>("run a command", false, (done, pending) => {
      tracked = pending;
      pending.deadline = Date.now() + options.deadlineMs;
      askAgainIfRefused<ClientChannel>(
        (asked) => this.#client.exec(command, asked),
        (error, stream) => {
          if (error) return done(error);
          channel = stream;
          // Channel errors end in 'close' (or the connection's); they must not throw.
          stream.on("error", (error: Error) => {
            this.#log.debug(`command channel error on ${this.where}: ${error.message}`);
          });
          const stdout: Buffer[] = [];
          const stderr: Buffer[] = [];
          let kept = 0;
          const keep = (into: Buffer[]) => (data: Buffer) => {
            if (kept >= MAX_OUTPUT) return;
            kept += data.length;
            into.push(data);
          };
          let code: number | undefined;
          let signal: string | undefined;
          stream.on("data", options.onStdout ?? keep(stdout));
          stream.stderr.on("data", keep(stderr));
          stream.on("exit", (exitCode: number | null, exitSignal?: string) => {
            code = typeof exitCode === "number" ? exitCode : undefined;
            signal = exitSignal ?? undefined;
          });
          stream.on("close", () => {
            writable = false;
            done(undefined, {
              code,
              signal,
              stdout: Buffer.concat(stdout).toString("utf8"),
              stderr: Buffer.concat(stderr).toString("utf8"),
            });
          });
          opened();
        },
      );
    });
    const release = () => this.#releaseExec();
    result.then(release, release);
    await Promise.race([open, result]);
    return {
      write: (text) => {
        if (writable && channel) channel.write(text);
      },
      end: () => {
        if (writable && channel) channel.end();
        writable = false;
      },
      setDeadline: (at) => {
        if (tracked) tracked.deadline = at;
      },
      result,
    };
  }

  /** Closes the connection; pending calls reject with `"connection"`. */
  destroy(reason?: Error): void {
    if (reason && !this.#lastError) this.#lastError = reason;
    this.#shutDown(
      new TransportError(
        `Connection to ${this.where} closed${reason ? `: ${reason.message}` : ""}`,
        "connection",
        { cause: reason },
      ),
    );
    try {
      this.#client.end();
    } catch {
      // Already gone.
    }
    this.#client.destroy();
  }

  /** Closes the connection and waits until ssh2 reports it closed. */
  async close(): Promise<void> {
    if (this.#socketClosed) return;
    const closed = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      this.#client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.destroy(new Error("closed by ContentMonster"));
    await closed;
  }

  #shutDown(error: TransportError): void {
    if (this.#closed) return;
    this.#closed = error;
    clearInterval(this.#watchdog);
    for (const pending of [...this.#pending]) pending.fail(error);
    this.#pending.clear();
    for (const wake of this.#execWaiters.splice(0)) wake();
    for (const wake of this.#roomWaiters.splice(0)) wake();
  }

  /**
   * Registers a call so that closing the connection rejects it. SFTP calls
   * count towards the no-reply watchdog.
   */
  #track<T>(
    what: string,
    isSftp: boolean,
    start: (done: (error?: Error | null, value?: T) => void, pending: Pending) => void,
  ): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<T>((resolve, reject) => {
      let finished = false;
      const finish = () => {
        if (finished) return false;
        finished = true;
        this.#pending.delete(pending);
        if (this.#pending.size === 0) this.#idleSince = Date.now();
        if (isSftp) {
          this.#sftpInFlight--;
          this.#lastReply = this.#linkProgress.at = Date.now();
        }
        return true;
      };
      const pending: Pending = {
        fail: (error) => {
          if (finish()) reject(error);
        },
      };
      this.#pending.add(pending);
      if (isSftp) {
        if (this.#sftpInFlight === 0) this.#lastReply = Date.now();
        this.#sftpInFlight++;
      }
      const done = (error?: Error | null, value?: T) => {
        if (!finish()) return;
        if (error) {
          reject(
            this.#closed ??
              (isConnectionLoss(error)
                ? new TransportError(
                  `Cannot ${what} on ${this.where}: ${error.message}`,
                  "connection",
                  { cause: error },
                )
                : error),
          );
        } else resolve(value as T);
      };
      try {
        start(done, pending);
      } catch (error) {
        done(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  #watch(): void {
    const now = Date.now();
    if (this.#pending.size === 0) this.#keepAlive(now);
    // Read only while replies are late: a carrier's count may cost a few file reads.
    if (this.#sftpInFlight > 0 && now - this.#lastReply > this.#watchEveryMs) {
      const moved = this.#client.bytesMoved?.();
      if (moved !== undefined && this.#movedSeen !== undefined && moved !== this.#movedSeen) {
        this.#lastMoved = this.#linkProgress.at = now;
      }
      this.#movedSeen = moved;
    } else this.#movedSeen = undefined;
    const progress = Math.max(this.#lastReply, this.#lastMoved);
    const linkProgress = Math.max(progress, this.#linkProgress.at);
    if (
      // Until the session started, the login's own limit (3 x Timeout) holds, and ends it.
      this.#sftpAnswered && this.#sftpInFlight > 0 &&
      (now - linkProgress > this.#timeoutMs || now - progress > ALONE_TIMEOUTS * this.#timeoutMs)
    ) {
      const seconds = Math.round((now - progress) / 1000);
      this.#log.warn(
        `no SFTP reply or progress from ${this.where} for ${seconds} s` +
          (now - linkProgress > this.#timeoutMs ? "" : " (others over its link progressed)") +
          "; dropping the connection",
      );
      this.destroy(
        new Error(`no SFTP reply or progress for ${seconds} s (Timeout ${this.#vessel.timeout})`),
      );
      return;
    }
    for (const pending of this.#pending) {
      if (pending.deadline !== undefined && now > pending.deadline) {
        this.#log.warn(`a command on ${this.where} ran past its deadline; dropping the connection`);
        this.destroy(new Error("a command ran past its deadline"));
        return;
      }
    }
  }

  /**
   * Sends a keepalive after a third of `Timeout` idle, and drops the
   * connection when one sent while idle has had no reply for `Timeout`.
   * A keepalive sent before the last call started is not judged: its reply
   * may wait behind that call's data.
   */
  #keepAlive(now: number): void {
    const ping = this.#ping;
    if (ping && ping.sentAt >= this.#idleSince) {
      if (now - ping.sentAt <= this.#timeoutMs) return;
      const seconds = Math.round((now - ping.sentAt) / 1000);
      this.#log.warn(
        `no keepalive reply from ${this.where} for ${seconds} s; dropping the connection`,
      );
      this.destroy(
        new Error(`no keepalive reply for ${seconds} s (Timeout ${this.#vessel.timeout})`),
      );
      return;
    }
    if (now - Math.max(this.#idleSince, ping?.sentAt ?? 0) < Math.max(1000, this.#timeoutMs / 3)) {
      return;
    }
    const sent = { sentAt: now };
    try {
      const sending = this.#client.ping?.(() => {
        if (this.#ping === sent) this.#ping = undefined;
      });
      if (sending) this.#ping = sent;
    } catch (error) {
      this.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  }

  async #acquireExec(): Promise<void> {
    while (this.#execs >= MAX_EXECS && !this.#closed) {
      await new Promise<void>((resolve) => this.#execWaiters.push(resolve));
    }
    this.#execs++;
  }

  #releaseExec(): void {
    this.#execs--;
    this.#execWaiters.shift()?.();
  }
}

function isConnectionLoss(error: Error): boolean {
  return /No response from server|Not connected|Channel open failure|ECONNRESET|EPIPE/i.test(
    error.message,
  );
}

/**
 * Buffers lent for the moment a write's bytes are read from the source:
 * ssh2 copies them into its request, so a buffer is free again as soon as
 * the request is made, and a connection needs about as many as it reads at
 * once, not one per write in flight (eight connections held 25 MiB more
 * than four when each writer kept its own).
 */
class ScratchBuffers {
  readonly #free: Buffer[] = [];

  take(size: number): Buffer {
    const buffer = this.#free.pop();
    return buffer && buffer.length >= size ? buffer : Buffer.allocUnsafe(size);
  }

  giveBack(buffer: Buffer): void {
    if (this.#free.length < MAX_FREE_SCRATCH) this.#free.push(buffer);
  }
}

/** Free buffers a connection keeps: its parts rarely read more at once. */
const MAX_FREE_SCRATCH = 4;

/**
 * Makes a session request with `ask`, and once more after
 * {@linkcode REFUSED_REQUEST_RETRY_MS} if the server refused it (ssh2's
 * "Unable to exec" and "Unable to start subsystem"); any other outcome goes
 * to `answered` as it is.
 */
function askAgainIfRefused<T>(
  ask: (asked: (error: Error | undefined, value: T) => void) => void,
  answered: (error: Error | undefined, value: T) => void,
): void {
  ask((error, value) => {
    if (!error || !/^Unable to (exec|start subsystem)/.test(error.message)) {
      return answered(error, value);
    }
    setTimeout(() => {
      try {
        ask(answered);
      } catch (error) {
        // The connection closed meanwhile: ssh2 throws "Not connected" at once.
        answered(error instanceof Error ? error : new Error(String(error)), undefined as T);
      }
    }, REFUSED_REQUEST_RETRY_MS);
  });
}

/** The error of a login ended because the transport closed. */
export function closedDuringLogin(where: string): TransportError {
  return new TransportError(
    `Cannot connect to ${where}: the transport closed during the login`,
    "connection",
  );
}

function announced(sftp: SFTPWrapper, extension: string): boolean {
  const extensions = (sftp as unknown as { _extensions?: Record<string, string> })._extensions;
  return extensions !== undefined && extension in extensions;
}
