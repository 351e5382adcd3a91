/**
 * Batches of small files hashed by a hasher that stays on the vessel, one
 * per connection: a batch then costs one round trip. A command per batch
 * costs a session's opening too, two or three round trips more (wan, 40 ms:
 * 93-141 ms a command over OpenSSH's ControlMaster, against 41 ms for an
 * SFTP request). The hasher ends after a few seconds without work, so an
 * idle connection keeps no session open and sends its keepalives. It starts
 * beside the create of a file it will hash (see {@linkcode startHasher}).
 *
 * @module
 */
import { TransportError } from "../transport.ts";
import {
  batchHashCommand,
  type HashGroup,
  parseBatchHashes,
  parseResidentHasherLine,
  RESIDENT_HASHER_COMMAND,
  residentFlushRequest,
  residentHashRequest,
} from "./commands.ts";
import type { ExecResult, RunningCommand, SshConnection } from "./connection.ts";
import { OutputLines } from "./output_lines.ts";

/** How long a hasher with nothing to do stays. */
const IDLE_MS = 2_000;
/**
 * Round trips a hasher with nothing to do stays, when that is longer: one
 * started beside a file's create waits for the file's writes, which on a
 * busy long link queue behind megabytes.
 */
const IDLE_ROUND_TRIPS = 8;

/** What a batch's hasher printed, keyed by `INDEX/NAME` (`INDEX`: the group's place). */
export interface BatchHashes {
  readonly hashes: Map<string, string>;
  /** Says why a file may have no hash, for messages. */
  readonly detail: string;
}

const hashers = new WeakMap<SshConnection, ResidentHasher>();

/**
 * Hashes the files of `groups` on `connection`'s vessel: with its resident
 * hasher, or with one command when a directory's name holds a line break.
 * Rejects with `"failed"` if the vessel cannot run the hasher, and with
 * `"connection"` if the link fails or `deadlineMs` passes.
 */
export async function hashGroups(
  connection: SshConnection,
  groups: readonly HashGroup[],
  deadlineMs: number,
): Promise<BatchHashes> {
  const hashed = await hasherOf(connection).hash(groups, deadlineMs);
  if (hashed) return hashed;
  const result = await connection.exec(batchHashCommand(groups), deadlineMs);
  return { hashes: parseBatchHashes(result.stdout), detail: exitDetail(result) };
}

/**
 * Flushes the file systems holding `dirs` on `connection`'s vessel (`sync
 * -f`, by its resident hasher): resolves `true` once every one is flushed,
 * `false` when the vessel could not (no `sync -f` there, or a directory name
 * with a line break). Rejects like {@linkcode hashGroups}.
 */
export async function flushDirectories(
  connection: SshConnection,
  dirs: readonly string[],
  deadlineMs: number,
): Promise<boolean> {
  return await hasherOf(connection).flush(dirs, deadlineMs);
}

/**
 * Starts `connection`'s hasher if it is not running, so that a batch asked
 * for a round trip or two later finds it ready: its session takes two or
 * three round trips to open, more than the writes of a small file.
 */
export function startHasher(connection: SshConnection, deadlineMs: number): void {
  hasherOf(connection).start(deadlineMs).then(
    // Running already: it must not end for lack of work before the file's hash is asked.
    (session) => session.expectWork(),
    () => {
      // The batch that needs it starts it again, and reports why it cannot.
    },
  );
}

function hasherOf(connection: SshConnection): ResidentHasher {
  let hasher = hashers.get(connection);
  if (!hasher) hashers.set(connection, hasher = new ResidentHasher(connection));
  return hasher;
}

/** One connection's hasher, started when first needed and again after it ended. */
class ResidentHasher {
  readonly #connection: SshConnection;
  #session?: Promise<Session>;
  #nextTag = 0;

  constructor(connection: SshConnection) {
    this.#connection = connection;
  }

  /** The hashes, or `undefined` if a directory's name cannot go to the hasher as a line. */
  async hash(groups: readonly HashGroup[], deadlineMs: number): Promise<BatchHashes | undefined> {
    const answers = await this.#ask(
      groups.map((group) => (tag) => residentHashRequest(tag, group)),
      deadlineMs,
    );
    if (!answers) return undefined;
    const hashes = new Map<string, string>();
    for (const [index, answer] of answers.entries()) {
      for (const [name, sha256] of answer.hashes) hashes.set(`${index}/${name}`, sha256);
    }
    return { hashes, detail: "the vessel's hasher could not read it" };
  }

  /** Whether every file system of `dirs` was flushed. */
  async flush(dirs: readonly string[], deadlineMs: number): Promise<boolean> {
    const answers = await this.#ask(
      dirs.map((dir) => (tag) => residentFlushRequest(tag, dir)),
      deadlineMs,
    );
    return answers?.every((answer) => answer.flushed) ?? false;
  }

  /**
   * Sends the requests `requests` write for their tags; their answers, or
   * `undefined` (nothing sent) when one cannot be written.
   */
  async #ask(
    requests: readonly ((tag: number) => string | undefined)[],
    deadlineMs: number,
  ): Promise<Answer[] | undefined> {
    const tagged = requests.map((request) => {
      const tag = this.#nextTag++;
      return { tag, text: request(tag) };
    });
    if (tagged.some((request) => request.text === undefined)) return undefined;
    let session = await this.start(deadlineMs);
    if (!session.open) session = await this.start(deadlineMs);
    return await Promise.all(
      tagged.map((request) => session.ask(request.tag, request.text!, deadlineMs)),
    );
  }

  /** The running session, started if there is none. */
  start(deadlineMs: number): Promise<Session> {
    if (this.#session) return this.#session;
    const session = Session.start(this.#connection, deadlineMs, () => {
      if (this.#session === session) this.#session = undefined;
    });
    session.catch(() => {
      if (this.#session === session) this.#session = undefined;
    });
    this.#session = session;
    return session;
  }
}

/** What the hasher answered to one request. */
interface Answer {
  /** Hashes of the files it could read, by name. */
  readonly hashes: Map<string, string>;
  /** Whether it flushed the directory's file system, as asked. */
  flushed: boolean;
}

interface Asked {
  readonly resolve: (answer: Answer) => void;
  readonly reject: (error: unknown) => void;
}

/** One run of the resident hasher. */
class Session {
  #command!: RunningCommand;
  readonly #ended: () => void;
  readonly #lines = new OutputLines((line) => this.#read(line));
  readonly #asked = new Map<number, Asked>();
  #answering?: { tag: number; answer: Answer };
  #deadline?: number;
  #idle?: ReturnType<typeof setTimeout>;
  #failure?: unknown;
  readonly #connection: SshConnection;

  private constructor(connection: SshConnection, ended: () => void) {
    this.#connection = connection;
    this.#ended = ended;
  }

  /**
   * Starts the hasher. Requests go out at once: a vessel that runs its SFTP
   * server for every session (`ForceCommand internal-sftp`) takes the first
   * one's digits for a length far beyond its limit and exits, so the
   * requests reject with `"failed"` and small files are read back instead.
   */
  static async start(
    connection: SshConnection,
    deadlineMs: number,
    ended: () => void,
  ): Promise<Session> {
    const session = new Session(connection, ended);
    session.#command = await connection.spawn(RESIDENT_HASHER_COMMAND, {
      deadlineMs,
      onStdout: (data) => session.#lines.push(data),
    });
    // Waiting for input is no stall: the deadlines are those of the requests.
    session.#command.setDeadline(undefined);
    session.#command.result.then(
      (result) => session.#end(result),
      (error) => session.#end(undefined, error),
    );
    session.#idleSoon();
    return session;
  }

  /** Whether it takes requests: not once it ends, or is ending for lack of work. */
  get open(): boolean {
    return this.#failure === undefined;
  }

  /** Sends `request` (tagged `tag`); resolves with the hasher's answer. */
  ask(tag: number, request: string, deadlineMs: number): Promise<Answer> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    clearTimeout(this.#idle);
    // Requests are answered in order: each one's time adds to those before it.
    this.#deadline = Math.max(this.#deadline ?? 0, Date.now()) + deadlineMs;
    this.#command.setDeadline(this.#deadline);
    return new Promise((resolve, reject) => {
      this.#asked.set(tag, { resolve, reject });
      this.#command.write(request);
    });
  }

  #read(line: string): void {
    const parsed = parseResidentHasherLine(line);
    if (!parsed) return;
    if (parsed.kind === "start") {
      this.#answering = { tag: parsed.tag, answer: { hashes: new Map(), flushed: false } };
      return;
    }
    if (parsed.kind === "hash") {
      this.#answering?.answer.hashes.set(parsed.name, parsed.sha256);
      return;
    }
    const answering = this.#answering;
    if (answering?.tag !== parsed.tag) return;
    if (parsed.kind === "flushed") {
      answering.answer.flushed = true;
      return;
    }
    const asked = this.#asked.get(parsed.tag);
    this.#asked.delete(parsed.tag);
    asked?.resolve(answering.answer);
    this.#answering = undefined;
    if (this.#asked.size === 0) {
      this.#deadline = undefined;
      this.#command.setDeadline(undefined);
      this.#idleSoon();
    }
  }

  /** Work is on its way: the hasher waits for it as long as for the first. */
  expectWork(): void {
    if (this.#asked.size === 0 && this.#failure === undefined) this.#idleSoon();
  }

  /** Ends the hasher once it had nothing to do for a while (see {@linkcode IDLE_ROUND_TRIPS}). */
  #idleSoon(): void {
    clearTimeout(this.#idle);
    const idleMs = Math.max(IDLE_MS, IDLE_ROUND_TRIPS * (this.#connection.roundTripMs ?? 0));
    this.#idle = setTimeout(() => {
      if (this.#asked.size > 0 || this.#failure !== undefined) return;
      this.#failure = new TransportError("the vessel's hasher was ended while idle", "connection");
      this.#ended();
      this.#command.end();
    }, idleMs);
  }

  #end(result: ExecResult | undefined, error?: unknown): void {
    clearTimeout(this.#idle);
    this.#failure ??= error ??
      new TransportError(`the vessel's hasher ended (${exitDetail(result!)})`, "failed");
    this.#ended();
    for (const asked of this.#asked.values()) asked.reject(this.#failure);
    this.#asked.clear();
  }
}

function exitDetail(result: ExecResult): string {
  const stderr = result.stderr.trim();
  return `exit ${result.code ?? result.signal}${stderr ? `: ${stderr.slice(0, 300)}` : ""}`;
}
