/**
 * The SFTP transport (the default): parts are uploaded over SFTP with many
 * write requests in flight, spread over a few SSH connections per vessel;
 * assembly and hashing run as one shell command on the vessel, streamed
 * alongside the upload (over SFTP for small files assembled at once); a
 * file of one part is written straight to its temp name in two round trips;
 * publishing is an atomic `posix-rename@openssh.com`.
 *
 * @module
 */
import type { Buffer } from "node:buffer";
import { errorMessage } from "../../lib/error_message.ts";
import {
  type Assembled,
  type Assembly,
  type ConnectionPool,
  joinPath,
  LEFTOVER_KEY,
  type LeftoverOptions,
  parentOf,
  parsePartName,
  type PartData,
  partName,
  partTempName,
  type ProbeItem,
  silentLogger,
  type SpaceInfo,
  spareTempName,
  tempPathFor,
  type Transport,
  type TransportCapabilities,
  TransportError,
  type TransportErrorCode,
  type TransportLogger,
} from "../transport.ts";
import type { SftpVessel, SshClientKind } from "./options.ts";
import { leftoverTempCommand } from "./commands.ts";
import { openOpenSsh } from "./openssh_link.ts";
import { findSsh, type OpenSshSetup, prepareOpenSsh } from "./openssh_setup.ts";
import type { AuthEnvironment, Credentials } from "./auth.ts";
import { hashFile, SMALL_FILE } from "./assemble.ts";
import { hasStatus, type RunCommand, SFTP_STATUS, SshConnection } from "./connection.ts";
import { AnswerRate, placePart } from "./part_placement.ts";
import { probeVessel } from "./probe.ts";
import { DirectorySyncs } from "./directory_sync.ts";
import { type BatchHashing, putWholeFile } from "./put_whole.ts";
import { HashBatcher } from "./hash_batch.ts";
import { hashGroups } from "./resident_hasher.ts";
import { SmallFileGate } from "./small_file_gate.ts";
import { type ResumeCheck, resumeCheck } from "./resume.ts";
import { SftpAssembly } from "./stream_assembly.ts";
import { loginUid, preparePartDirectory } from "./private_temp_dir.ts";
import {
  changeMode,
  closeHandle,
  freeBytes,
  fsyncHandle,
  lstatPath,
  makeDirectories,
  openHandle,
  readDirectory,
  removeDirectory,
  removeFile,
  renameOver,
  writeFile,
} from "./sftp_ops.ts";

/** Tuning and test hooks for {@linkcode SftpTransport}. */
export interface SftpTransportOptions {
  /** SSH connections per vessel, fixed; overrides the vessel's `Connections`. */
  readonly connections?: number;
  /** Where default keys and the agent are found (default: this process's env). */
  readonly authEnvironment?: AuthEnvironment;
  /** Where log lines go (default: nowhere). */
  readonly log?: TransportLogger;
  /**
   * From this round trip on, small files are hashed on the vessel in
   * batches instead of read back (default {@linkcode BATCH_HASH_FROM_MS}).
   */
  readonly batchHashFromMs?: number;
}

/** Commands get `Timeout` seconds per this many bytes they read, plus a base. */
const BYTES_PER_TIMEOUT = 16 << 20;
const KEY_PATTERN = /^[A-Za-z0-9_-]+$/;
/**
 * The most connections `Connections = auto` opens: enough for a link with
 * 1 % loss (one CUBIC stream carries ~2 Mbit/s at 60 ms) to carry tens of
 * Mbit/s; sshd's MaxStartups (10 unauthenticated at once by default) is
 * not met, since at most {@linkcode MAX_OPENING} are logging in and not yet
 * authenticated at once.
 */
export const AUTO_CONNECTIONS = 16;
/** Logins that may be under way and not authenticated yet, at the same time. */
const MAX_OPENING = 8;
/**
 * What waiting for a login costs, counted in calls queued in front on an
 * open connection: on a long link a login takes a dozen round trips, a
 * queued part a few.
 */
const LOGIN_COST = 2;
/**
 * A connection that comes up takes calls waiting for slower logins while it
 * carries fewer calls than this: a part should not wait seconds for its own
 * login, but a batch of small files spread over logins that finish together
 * should not all crowd onto the first.
 */
const TAKE_OVER_BELOW = 4;
/** A connection that is up has room for a call waiting for a login while it carries fewer. */
const ROOM_BELOW = 2;
/**
 * The round trip from which a small file is hashed on the vessel in a batch
 * rather than read back. On a LAN reading back costs less than a command;
 * on a WAN the bytes cross the link twice and the return leg, on streams
 * that start slow, finishes last (wan, 100 x 64 KiB: its last 0.3-0.45 s).
 */
const BATCH_HASH_FROM_MS = 10;
/**
 * Round trips from starting `ssh` to its authentication: TCP's handshake,
 * the banners, the key exchange, the service request and three of
 * authentication (none, the key offered, the signature) make about 6.5;
 * process start and key exchange CPU the rest.
 */
const ROUND_TRIPS_TO_AUTHENTICATE = 8;
/**
 * A first login this slow to authenticate (1.6 s and more) tells a long link
 * before the first SFTP reply does (the session, the SFTP subsystem and a
 * request come between), so the other connections start logging in that
 * much earlier: on a 600 ms link, about 3 s sooner. Faster logins say too
 * little (a slow CPU looks the same) and wait for the reply.
 */
const LONG_LOGIN_ROUND_TRIP_MS = 200;
/** Connections `check` opens at once to see whether the vessel lets them in. */
const PROBED_CONNECTIONS = 6;
/** Connections in use until the engine says how many (tests, `check`). */
const IN_USE_UNTOLD = 2;
/**
 * A connection whose parts under way have had no write answered for this
 * many round trips (and {@linkcode STALLED_MS}) takes no further part while
 * another connection can: its stream has stopped (a half-dead path, or TCP
 * backing off its retransmission timer after repeated losses) or crawls,
 * and a part queued behind it would end last. Below that, a new stream's
 * slow start (on sat, 600 ms: a first 255 KiB write answered after 6 round
 * trips) must not count: at 4 round trips and 1 s, parts crowded onto the
 * connections just logged in, and 8 MiB took 30.1-32.0 s against 24.8-27.7.
 */
const STALLED_ROUND_TRIPS = 8;
const STALLED_MS = 3_000;
/** What a stalled connection weighs for a part: more than any login. */
const STALLED_COST = 1_000;
/**
 * Files assembled whose connection a publish may still use: one per file in
 * flight, of which there are far fewer.
 */
const MAX_ASSEMBLED_ON = 256;
/**
 * Tries a part or a one-part file gets when its connection breaks while
 * another is up: one more, since when the whole link is down every further
 * try adds a `Timeout` before the engine hears of it.
 */
const PUT_TRIES = 2;
/** How long a vessel that refused a further connection is not asked for one again. */
const REFUSED_MS = 60_000;
/**
 * How long a failed login answers the calls that come right behind it, when
 * no other connection is up or logging in: each part of a file queued for a
 * vessel that refuses connections logged in again the moment the part before
 * failed (28 logins in 0.2 s; sshd's MaxStartups and fail2ban count each).
 * Below the engine's shortest back-off (0.8 s), so its next try logs in.
 */
const LOGIN_FAILURE_HOLD_MS = 500;

/**
 * A call on a connection; `answered` hears the bytes the vessel answers of
 * its writes (or holds from a cut try: `resumed`).
 */
type RunBody<T> = (
  connection: SshConnection,
  answered: (bytes: number, resumed?: boolean) => void,
) => Promise<T>;

/** Listings of a part directory that removing it may take (see {@linkcode SftpTransport.removeParts}). */
const REMOVE_PARTS_ROUNDS = 3;

/** Where {@linkcode SftpTransport} runs a call (see its `#run`). */
interface RunOptions {
  readonly spread?: boolean;
  readonly part?: {
    readonly bytes: number;
    readonly bytesAfter: number;
    /** Which part: its connection is known while it runs (see {@linkcode SftpTransport.putSparePart}). */
    readonly id?: string;
  };
  readonly on?: SshConnection;
}

interface Slot {
  connection?: SshConnection;
  opening?: Promise<SshConnection>;
  /** The login under way has authenticated (sshd no longer counts it against MaxStartups). */
  authenticated?: boolean;
  /** Calls waiting for the login, or running on the connection. */
  calls: number;
  /** Parts under way on it. */
  parts: number;
  /** When one of its parts last had a write answered, or started (`performance.now()`). */
  answeredAt: number;
  /** Bytes of the parts on it (or waiting for its login) the vessel has not answered. */
  pendingBytes: number;
  /** The rate its parts are answered at on its connection. */
  rate: AnswerRate;
}

/** A {@linkcode Transport} to a vessel over SSH/SFTP. */
export class SftpTransport implements Transport {
  readonly vessel: string;
  readonly capabilities: TransportCapabilities;
  readonly connections: ConnectionPool;
  readonly #config: SftpVessel;
  readonly #log: TransportLogger;
  readonly #slots: Slot[];
  /** Slots in use: the engine's choice, at most the vessel's ceiling. */
  #inUse: number;
  /** Fewer than the slots when the vessel refused a further connection lately. */
  #ceiling: number;
  #ceilingUntil = 0;
  readonly #acknowledged = { bytes: 0 };
  /** The connection each file was assembled on, where its directory was opened ahead. */
  readonly #assembledOn = new Map<string, SshConnection>();
  readonly #authEnvironment?: AuthEnvironment;
  #credentials?: Promise<Credentials>;
  /** The SSH carrier: the system's OpenSSH client, or ssh2 in this process. */
  readonly carrier: SshClientKind;
  readonly #sshCommand?: string;
  #openSsh?: Promise<OpenSshSetup>;
  #connectionsOpened = 0;
  /**
   * The round trip a long first login showed (see
   * {@linkcode LONG_LOGIN_ROUND_TRIP_MS}), until an SFTP reply tells it.
   */
  #loginRoundTripMs?: number;
  #uid?: Promise<number>;
  #closed = false;
  /** Ends the logins still under way when the transport closes: nothing waits for them. */
  readonly #closing = new AbortController();
  readonly #batchHashFromMs: number;
  readonly #smallFiles = new SmallFileGate(() => this.#usableUp().length);
  /** Set once the vessel could not hash a batch: small files are read back from then on. */
  #batchHashFailed = false;
  readonly #hashBatching: BatchHashing = {
    pays: () =>
      !this.#batchHashFailed && (this.connections.roundTripMs ?? 0) >= this.#batchHashFromMs,
    hash: (path, bytes) =>
      this.#hashBatcher.hash(path, bytes).catch((error) => {
        if (error instanceof TransportError && error.code === "connection") throw error;
        if (!this.#batchHashFailed) {
          this.#log.warn(
            `vessel "${this.vessel}" could not hash small files with a command ` +
              `(${errorMessage(error)}); they are read back instead`,
          );
        }
        this.#batchHashFailed = true;
        return undefined;
      }),
  };
  readonly #hashBatcher = new HashBatcher((groups, bytes) =>
    this.#run(
      `Cannot hash a batch of small files on vessel "${this.vessel}"`,
      (connection) => hashGroups(connection, groups, this.#deadline(bytes)),
    )
  );
  /**
   * The vessel has accepted a login (ssh said so, or a connection opened):
   * more may log in together without risking a ban.
   */
  #admitted = false;
  /** ssh's TCP handshake took a long round trip: logins start ahead before one is accepted. */
  #longLink = false;
  /** Settles with the slot of the next login that succeeds (then replaced by a new one). */
  #loggedIn = Promise.withResolvers<Slot>();
  /** Resolved (and replaced) when a call ends on a connection that is up, with its slot. */
  #callEnded = Promise.withResolvers<Slot>();
  /**
   * Made by parts waiting while every connection has stalled, and resolved
   * when one may take them again (a call ended, or a stalled one was answered).
   */
  #partsWaiting?: PromiseWithResolvers<void>;
  /** The slot each part with an id runs on. */
  readonly #partsOn = new Map<string, Slot>();
  /**
   * How the login {@linkcode connectAhead} started failed, for the next call
   * to report instead of logging in again: a refused key is then tried once,
   * not once ahead and once more by the call (fail2ban counts both).
   */
  #failedAhead?: unknown;
  /** The last login that failed while no other was up or under way (LOGIN_FAILURE_HOLD_MS). */
  #loginFailure?: { readonly error: unknown; readonly at: number };
  /** Flushes destination directories, one fsync for the files renamed into one together. */
  readonly #directorySyncs = new DirectorySyncs<SshConnection, Buffer>({
    // Read-only: OpenSSH's sftp-server opens a directory like a file, and fsync of a directory
    // descriptor flushes its entries (a vessel that loses power keeps the renamed file).
    open: (connection, dir) => openHandle(connection, dir, "r"),
    fsync: fsyncHandle,
    close: closeHandle,
  });
  /** Directories being created, so files arriving together in a new one create it once. */
  readonly #makingDirectories = new Map<string, Promise<void>>();

  /** Connects lazily: nothing happens until the first call. */
  constructor(vessel: SftpVessel, options: SftpTransportOptions = {}) {
    if (!vessel.address) {
      throw new TypeError(`Cannot use SFTP for vessel "${vessel.name}": it has no Address`);
    }
    const fixed = options.connections ??
      (vessel.connections === "auto" ? undefined : vessel.connections);
    const max = Math.max(1, Math.floor(fixed ?? AUTO_CONNECTIONS));
    this.vessel = vessel.name;
    this.#config = vessel;
    this.#log = options.log ?? silentLogger;
    this.#authEnvironment = options.authEnvironment;
    this.#batchHashFromMs = options.batchHashFromMs ?? BATCH_HASH_FROM_MS;
    this.#slots = Array.from({ length: max }, () => ({
      calls: 0,
      parts: 0,
      answeredAt: 0,
      pendingBytes: 0,
      rate: new AnswerRate(),
    }));
    this.#inUse = fixed === undefined ? Math.min(IN_USE_UNTOLD, max) : max;
    this.#ceiling = max;
    // One part per connection fills its SSH window; more only cost memory.
    this.capabilities = { parallelParts: max, parallelDeliveries: 8 };
    const countOpen = () => this.#slots.filter((slot) => live(slot)).length;
    const acknowledged = this.#acknowledged;
    const roundTrip = () => {
      const times = this.#slots.map((slot) => live(slot)?.roundTripMs ?? Infinity);
      const quickest = Math.min(...times);
      return Number.isFinite(quickest) ? quickest : this.#loginRoundTripMs;
    };
    this.connections = {
      max,
      adaptive: fixed === undefined,
      get open() {
        return countOpen();
      },
      get acknowledgedBytes() {
        return acknowledged.bytes;
      },
      get roundTripMs() {
        return roundTrip();
      },
      use: (count) => this.#use(count),
    };
    this.#sshCommand = findSsh(vessel.sshCommand);
    this.carrier = vessel.sshClient ?? (this.#sshCommand ? "openssh" : "builtin");
    this.#log.info(`SSH client: ${this.describeCarrier()}`);
    if (this.carrier === "openssh" && this.#sshCommand) {
      // While the daemon starts: the first login then need not wait for `ssh -G`. A
      // failure here is only forgotten; the first login tries again and reports it.
      this.#openSshSetup(this.#sshCommand).catch(() => {});
    }
  }

  /** Which SSH client carries this vessel's connections, for logs and `check`. */
  describeCarrier(): string {
    if (this.carrier === "builtin") return "builtin (ssh2 in this process)";
    if (!this.#sshCommand) {
      return `openssh, but no ssh binary ${this.#sshSearched()}`;
    }
    const config = this.#config.sshConfigFile === undefined
      ? "ssh_config: the user's"
      : `ssh_config: ${this.#config.sshConfigFile}`;
    return `openssh (${this.#sshCommand}; ${config})`;
  }

  async prepare(key: string, destination: string): Promise<Set<number>> {
    const partDir = this.#partDir(key);
    checkAbsolute(destination);
    const action = `Cannot prepare the part directory of "${key}" and the directory of ` +
      `${quote(destination)} on vessel "${this.vessel}"`;
    return await this.#run(action, async (connection) => {
      const [fresh] = await Promise.all([
        preparePartDirectory(connection, this.#config.tempDir, partDir, {
          vessel: this.vessel,
          uid: this.#loginUid((command, deadlineMs) => connection.exec(command, deadlineMs)),
        }),
        makeDirectories(connection, parentOf(destination)),
      ]);
      return fresh ? new Set<number>() : partsIn(await readDirectory(connection, partDir));
    });
  }

  /**
   * The login user's uid, asked once per transport: as soon as a login can
   * run commands (see {@linkcode #openOpenSsh}), or by the first call that
   * needs it.
   */
  #loginUid(run: RunCommand): Promise<number> {
    if (this.#uid) return this.#uid;
    const uid = loginUid(run, this.#deadline(0));
    uid.catch(() => {
      if (this.#uid === uid) this.#uid = undefined;
    });
    return this.#uid = uid;
  }

  async listParts(key: string): Promise<Set<number>> {
    const partDir = this.#partDir(key);
    const action = `Cannot list the parts of "${key}" on vessel "${this.vessel}"`;
    return await this.#run(
      action,
      async (connection) => partsIn(await readDirectory(connection, partDir)),
    );
  }

  async putPart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    bytesAfter = 0,
    ending?: () => void,
  ): Promise<void> {
    const partDir = this.#partDir(key);
    const action = `Cannot put part ${index} of "${key}" on vessel "${this.vessel}"`;
    return await this.#runElsewhereIfBroken(
      `part ${index} of "${key}"`,
      action,
      async (connection, answered) => {
        try {
          await writeFile(connection, joinPath(partDir, partTempName(index)), data, {
            resume: this.#resumeCheck(connection),
            renameTo: joinPath(partDir, partName(index)),
            acknowledged: answered,
            ending,
          });
        } catch (error) {
          throw await this.#noSpace(connection, partDir, data.byteLength, error);
        }
      },
      { spread: true, part: { bytes: data.byteLength, bytesAfter, id: partId(key, index) } },
    );
  }

  putSparePart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    bytesAfter = 0,
  ): Promise<void> | undefined {
    const partDir = this.#partDir(key);
    // A slow stream still answering ends its part sooner than a spare in slow start, and a spare
    // on a full link slows the others (wan: 64 MiB took 7.2 s against 6.8-6.9 s).
    const first = this.#partsOn.get(partId(key, index));
    if (!first || !stalled(first, performance.now())) return undefined;
    const idle = this.#closed ? undefined : this.#fastestIdle();
    if (!idle) return undefined;
    const action = `Cannot put a spare copy of part ${index} of "${key}" on vessel ` +
      `"${this.vessel}"`;
    // Pinned to the idle connection (counted there before this returns), with no try
    // elsewhere: the first copy is still under way.
    return this.#run(
      action,
      (connection, answered) =>
        writeFile(connection, joinPath(partDir, spareTempName(index)), data, {
          renameTo: joinPath(partDir, partName(index)),
          acknowledged: answered,
        }),
      { on: idle, part: { bytes: data.byteLength, bytesAfter } },
    );
  }

  /** The connection that is up, carries no call and has shown the highest rate, if any. */
  #fastestIdle(): SshConnection | undefined {
    const now = performance.now();
    let fastest: SshConnection | undefined;
    let fastestRate = -1;
    for (const slot of this.#usableUp()) {
      if (slot.calls > 0) continue; // A part's pending bytes are counted with its call.
      const rate = slot.rate.bytesPerMs(now) ?? 0;
      if (rate > fastestRate) {
        fastest = live(slot);
        fastestRate = rate;
      }
    }
    return fastest;
  }

  /**
   * Runs `body` as `#run` does, and again when the connection it ran on broke
   * while another is up: one of many streams dropped (on a lossy link, one
   * stuck in TCP's backoff for `Timeout`) must not fail the file, and back
   * off the whole vessel, while the others carry on. The next try resumes
   * from what the vessel holds (see resume.ts), and a broken connection's
   * late writes land the same bytes. The broken connection may not be
   * marked closed yet when its failure arrives: it never counts as the
   * other one up.
   */
  async #runElsewhereIfBroken<T>(
    what: string,
    action: string,
    body: RunBody<T>,
    options: RunOptions,
  ): Promise<T> {
    for (let tries = 1;; tries++) {
      let ranOn: SshConnection | undefined;
      try {
        return await this.#run(action, (connection, answered) => {
          ranOn = connection;
          return body(connection, answered);
        }, options);
      } catch (error) {
        const broken = error instanceof TransportError && error.code === "connection";
        const elsewhere = this.#usableUp().some((slot) => live(slot) !== ranOn);
        if (!broken || tries >= PUT_TRIES || this.#closed || !elsewhere) throw error;
        this.#log.info(`${what}: sending it again on another connection (${errorMessage(error)})`);
      }
    }
  }

  startAssembly(key: string, count: number, destination: string): Assembly {
    const partDir = this.#partDir(key);
    checkAbsolute(destination);
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new RangeError(`Cannot assemble ${quote(destination)} from ${count} parts`);
    }
    const action = `Cannot assemble ${quote(destination)} from ${count} parts of "${key}" ` +
      `on vessel "${this.vessel}"`;
    const tempPath = tempPathFor(key, destination);
    return new SftpAssembly({
      action,
      partDir,
      count,
      tempPath,
      fsync: this.#config.fsync,
      deadline: (bytes) => this.#deadline(bytes),
      stallMs: this.#deadline(0),
      run: (body) => this.#run(action, body),
      lastPartAnnounced: (connection) => this.#publishAhead(connection, tempPath, destination),
    });
  }

  async putWhole(key: string, destination: string, data: Uint8Array): Promise<Assembled> {
    this.#partDir(key); // Checks the key.
    checkAbsolute(destination);
    const tempPath = tempPathFor(key, destination);
    const action = `Cannot put ${quote(destination)} whole (${data.byteLength} bytes) as ` +
      `${quote(tempPath)} on vessel "${this.vessel}"`;
    const leave = data.byteLength <= SMALL_FILE
      ? await this.#smallFiles.enter(data.byteLength)
      : undefined;
    try {
      return await this.#runElsewhereIfBroken(
        quote(destination),
        action,
        async (connection) => {
          try {
            const { sha256, size } = await putWholeFile(connection, tempPath, data, {
              fsync: this.#config.fsync,
              deadline: (bytes) => this.#deadline(bytes),
              makeDirectory: (dir) => this.#makeDirectory(connection, dir),
              resume: this.#resumeCheck(connection),
              hashBatch: this.#hashBatching,
              written: () => {
                leave?.();
                // The vessel now hashes it: open its directory meanwhile, for the fsync to
                // leave with the rename (a round trip less for the last files).
                this.#publishAhead(connection, tempPath, destination);
              },
            });
            return { tempPath, sha256, size };
          } catch (error) {
            throw await this.#noSpace(connection, parentOf(destination), data.byteLength, error);
          }
        },
        { spread: leave === undefined },
      );
    } finally {
      leave?.();
    }
  }

  async hash(path: string): Promise<string | undefined> {
    checkAbsolute(path);
    const action = `Cannot hash ${quote(path)} on vessel "${this.vessel}"`;
    return await this.#run(
      action,
      (connection) => hashFile(connection, path, (bytes) => this.#deadline(bytes)),
    );
  }

  async publish(tempPath: string, destination: string, mode?: number): Promise<void> {
    checkAbsolute(tempPath);
    checkAbsolute(destination);
    const assembledOn = this.#assembledOn.get(tempPath);
    this.#assembledOn.delete(tempPath);
    const action = `Cannot publish ${quote(tempPath)} as ${quote(destination)} on vessel ` +
      `"${this.vessel}"`;
    return await this.#run(action, async (connection) => {
      const [posixRename, syncDirectory] = await Promise.all([
        connection.hasExtension("posix-rename@openssh.com"),
        this.#config.fsync && connection.hasExtension("fsync@openssh.com"),
      ]);
      if (!posixRename) {
        throw new TransportError(
          "its SFTP server lacks posix-rename@openssh.com, so an existing file cannot be " +
            "replaced atomically (use OpenSSH's sftp-server on the vessel)",
          "unsupported",
        );
      }
      // Requests leave in the order they are made, and the server handles them in that order:
      // the directory's fsync (shared with the files renamed into it meanwhile) after the
      // rename. Two round trips in all, or one when the directory was opened ahead.
      await Promise.all([
        mode === undefined ? undefined : changeMode(connection, tempPath, mode & 0o777),
        renameOver(connection, tempPath, destination),
        syncDirectory ? this.#directorySyncs.sync(connection, parentOf(destination)) : undefined,
      ]);
    }, { on: assembledOn });
  }

  /**
   * Once the vessel has every part of a file to assemble, opens its
   * destination's directory on the connection assembling it, for the
   * directory's fsync when that file is published there (if no part is under
   * way on it then): a round trip less at the end of every file (on a 600 ms
   * link, 0.6 s).
   */
  #publishAhead(connection: SshConnection, tempPath: string, destination: string): void {
    if (!this.#config.fsync) return;
    this.#assembledOn.set(tempPath, connection);
    while (this.#assembledOn.size > MAX_ASSEMBLED_ON) {
      this.#assembledOn.delete(this.#assembledOn.keys().next().value!);
    }
    void connection.hasExtension("fsync@openssh.com").then((has) => {
      if (has && !connection.closed) {
        this.#directorySyncs.openAhead(connection, parentOf(destination));
      }
    }, () => {});
  }

  async removeLeftovers(options: LeftoverOptions): Promise<number> {
    const action = `Cannot remove old leftovers on vessel "${this.vessel}"`;
    const entries = await this.#run(
      action,
      (connection) => readDirectory(connection, this.#config.tempDir),
    ) ?? [];
    const before = (Date.now() - options.olderThanMs) / 1000;
    let removed = 0;
    for (const entry of entries) {
      if (!LEFTOVER_KEY.test(entry.name) || options.keep.has(entry.name)) continue;
      if (entry.mtime >= before) continue;
      await this.removeParts(entry.name);
      removed++;
    }
    for (const destination of options.destinations) {
      checkAbsolute(destination);
      const command = leftoverTempCommand(destination, options.olderThanMs / 60_000);
      // find may be missing, or the destination not exist yet: nothing to remove then.
      const result = await this.#run(
        action,
        (connection) => connection.exec(command, this.#deadline(0) * 10),
      );
      if (result.code === 0) removed += result.stdout.split("\n").filter(Boolean).length;
    }
    return removed;
  }

  async removeParts(key: string, count?: number): Promise<void> {
    const partDir = this.#partDir(key);
    const action = `Cannot remove the parts of "${key}" on vessel "${this.vessel}"`;
    return await this.#run(action, async (connection) => {
      if (count !== undefined && await removeKnownParts(connection, partDir, count)) return;
      const stats = await lstatPath(connection, partDir);
      if (!stats) return;
      // A link planted as the part directory goes itself; what it points to stays.
      if (!stats.isDirectory()) return await removeFile(connection, partDir);
      for (let round = 1;; round++) {
        const entries = await readDirectory(connection, partDir);
        if (!entries) return;
        await Promise.all(
          entries
            .filter((entry) => entry.name !== "." && entry.name !== "..")
            .map((entry) => removeFile(connection, joinPath(partDir, entry.name))),
        );
        try {
          return await removeDirectory(connection, partDir);
        } catch (error) {
          // The slower copy of a part with a spare (putSparePart) may still rename into it.
          if (round >= REMOVE_PARTS_ROUNDS || !hasStatus(error, SFTP_STATUS.FAILURE)) throw error;
        }
      }
    });
  }

  async remove(path: string): Promise<void> {
    checkAbsolute(path);
    this.#assembledOn.delete(path);
    const action = `Cannot remove ${quote(path)} on vessel "${this.vessel}"`;
    return await this.#run(action, (connection) => removeFile(connection, path));
  }

  async freeSpace(destination: string): Promise<SpaceInfo | undefined> {
    checkAbsolute(destination);
    const action = `Cannot find the free space for ${quote(destination)} on vessel ` +
      `"${this.vessel}"`;
    return await this.#run(action, async (connection) => {
      const [temp, target] = await Promise.all([
        freeBytes(connection, this.#config.tempDir),
        freeBytes(connection, parentOf(destination)),
      ]);
      if (temp === undefined || target === undefined) return undefined;
      return { freeBytes: Math.min(temp, target) };
    });
  }

  async probe(destinations: readonly string[]): Promise<ProbeItem[]> {
    const client: ProbeItem = {
      check: "ssh client",
      ok: this.carrier === "builtin" || this.#sshCommand !== undefined,
      detail: this.describeCarrier(),
    };
    if (!client.ok) return [client];
    const items = await probeVessel(
      this.#config,
      async () => (await this.#connection(this.#pick())).connection,
      destinations,
    );
    const loggedIn = items.some((item) => item.check === "auth" && item.ok);
    return [client, ...items, ...loggedIn ? [await this.#probeConnections()] : []];
  }

  /**
   * Opens the connections a transfer would start with, all at once, and
   * tells whether the vessel let them in (sshd's MaxStartups drops logins
   * beyond 10 at once by default, fewer where the operator set it so).
   */
  async #probeConnections(): Promise<ProbeItem> {
    const { adaptive, max } = this.connections;
    const wanted = adaptive ? Math.min(max, PROBED_CONNECTIONS) : max;
    const inUse = this.#inUse;
    this.#use(wanted);
    while (this.#slots.some((slot) => slot.opening)) {
      await Promise.allSettled(this.#slots.map((slot) => slot.opening));
    }
    const open = this.connections.open;
    this.#use(inUse);
    const mode = adaptive
      ? `auto: follows the link, up to ${max}`
      : `${max} (Connections = ${max})`;
    if (open >= wanted) {
      return { check: "connections", ok: true, detail: `${mode}; ${open} logged in at once` };
    }
    return {
      check: "connections",
      ok: adaptive,
      detail: `${mode}; the vessel let in ${open} of ${wanted} at once (sshd_config's ` +
        `MaxStartups, or a firewall): ContentMonster stays at ${open} for a while after a ` +
        `refusal` + (adaptive ? "" : "; lower Connections or raise MaxStartups"),
    };
  }

  connectAhead(): void {
    if (this.#closed || this.#slots.some((slot) => live(slot) || slot.opening)) return;
    this.#startOpening(this.#slots[0]).catch((error) => this.#failedAhead = error);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    this.#wakeWaitingParts();
    this.#smallFiles.close(
      new TransportError(`The transport of vessel "${this.vessel}" is closed`, "connection"),
    );
    const closing = this.#slots.map(async (slot) => {
      const connection = slot.connection ?? await slot.opening?.catch(() => undefined);
      slot.connection = undefined;
      await connection?.close();
    });
    await Promise.all(closing);
    const openSsh = await this.#openSsh?.catch(() => undefined);
    await openSsh?.dispose();
  }

  #partDir(key: string): string {
    if (!KEY_PATTERN.test(key)) {
      throw new TypeError(`Cannot use delivery key ${quote(key)}: it must match ${KEY_PATTERN}`);
    }
    return joinPath(this.#config.tempDir, key);
  }

  /** Creates `dir` and its parents once, however many calls need it at the same time. */
  #makeDirectory(connection: SshConnection, dir: string): Promise<void> {
    let making = this.#makingDirectories.get(dir);
    if (!making) {
      making = makeDirectories(connection, dir).finally(() => this.#makingDirectories.delete(dir));
      this.#makingDirectories.set(dir, making);
    }
    return making;
  }

  /** How long a command reading `bytes` may run before the connection is dropped. */
  #deadline(bytes: number): number {
    return this.#config.timeout * 1000 * (3 + bytes / BYTES_PER_TIMEOUT);
  }

  /** Resumes files cut mid-way (resume.ts), saying so in the log. */
  #resumeCheck(connection: SshConnection): ResumeCheck {
    const check = resumeCheck(connection, (bytes) => this.#deadline(bytes));
    return async (path, stats, data) => {
      const offset = await check(path, stats, data);
      if (offset > 0) {
        this.#log.info(
          `resuming ${JSON.stringify(path)} at byte ${offset} of ${data.byteLength}: the vessel ` +
            "holds the start from an earlier try",
        );
      }
      return offset;
    };
  }

  /**
   * Runs `body` on a connection, turning every failure into a TransportError
   * for `action`. Only a call with `spread` (a part's worth of
   * data) may wait for a connection still logging in while another is up:
   * that is how parts spread over the connections the engine adds, and a
   * login costs a dozen round trips, more than any small call queued on a
   * connection that is up. A `part` (of `bytes`, with `bytesAfter` of its
   * file still to come) is kept off a slow connection at the end of its file
   * (see {@linkcode placePart}), and waits while every connection it could
   * use has stalled (see {@linkcode STALLED_ROUND_TRIPS}); `body` tells the
   * bytes the vessel answers of its writes (or holds from a cut try:
   * `resumed`) through its second argument. A call `on` a connection runs
   * there while no part's writes are under way on it.
   */
  async #run<T>(action: string, body: RunBody<T>, options: RunOptions = {}): Promise<T> {
    let slot: Slot | undefined;
    let part = false;
    let pending = 0;
    try {
      let used: { slot: Slot; connection: SshConnection };
      for (;;) {
        const pinned = this.#unloadedSlotOf(options.on);
        slot = pinned ?? this.#pick(options.spread);
        if (options.part) {
          if (!pinned) slot = this.#placePart(slot, options.part.bytes, options.part.bytesAfter);
          pending = options.part.bytes;
        }
        slot.calls++;
        slot.pendingBytes += pending;
        used = await this.#connection(slot, pending);
        slot = used.slot;
        if (!options.part || !stalled(slot, performance.now())) break;
        slot.calls--;
        slot.pendingBytes -= pending;
        slot = undefined;
        await (this.#partsWaiting ??= Promise.withResolvers()).promise;
      }
      const on = slot;
      const connection = used.connection;
      if (options.part) {
        part = true;
        if (options.part.id) this.#partsOn.set(options.part.id, on);
        if (on.parts++ === 0) {
          on.answeredAt = performance.now();
          on.rate.busy(on.answeredAt);
        }
      }
      return await body(connection, (bytes, resumed = false) => {
        const now = performance.now();
        const wasStalled = stalled(on, now);
        on.answeredAt = now;
        const answered = Math.min(bytes, pending);
        pending -= answered;
        on.pendingBytes -= answered;
        // Bytes a cut try left on the vessel crossed the link then, not now.
        if (!resumed) on.rate.answered(bytes);
        if (wasStalled) this.#wakeWaitingParts();
      });
    } catch (error) {
      throw classify(action, error);
    } finally {
      const id = options.part?.id;
      if (id && this.#partsOn.get(id) === slot) this.#partsOn.delete(id);
      if (slot) {
        if (part && --slot.parts === 0) slot.rate.idle(performance.now());
        slot.pendingBytes -= pending;
        slot.calls--;
        if (live(slot)) {
          const ended = this.#callEnded;
          this.#callEnded = Promise.withResolvers<Slot>();
          ended.resolve(slot);
        }
      }
      this.#wakeWaitingParts();
      this.#closeSurplus();
    }
  }

  /**
   * The slot whose open connection is `connection`, unless writes of parts
   * are under way there: a call would wait behind them.
   */
  #unloadedSlotOf(connection: SshConnection | undefined): Slot | undefined {
    const slot = connection && this.#slots.find((slot) => live(slot) === connection);
    return slot && slot.pendingBytes === 0 ? slot : undefined;
  }

  /** `picked` for a part, or a faster connection at the end of its file (see {@linkcode placePart}). */
  #placePart(picked: Slot, bytes: number, bytesAfter: number): Slot {
    const now = performance.now();
    const opening = this.#unauthenticated();
    const lanes = this.#usable().map((slot) => ({
      slot,
      pendingBytes: slot.pendingBytes,
      rate: slot.rate.bytesPerMs(now),
      state: live(slot)
        ? stalled(slot, now) ? "none" as const : "up" as const
        : slot.opening || opening < MAX_OPENING
        ? "login" as const
        : "none" as const,
    }));
    const pickedLane = lanes.find((lane) => lane.slot === picked);
    return pickedLane ? placePart(lanes, pickedLane, bytes, bytesAfter).slot : picked;
  }

  /** Has the parts waiting for a connection that has not stalled look again. */
  #wakeWaitingParts(): void {
    this.#partsWaiting?.resolve();
    this.#partsWaiting = undefined;
  }

  /** Uses at most `count` connections; idle ones beyond it close now, busy ones when done. */
  #use(count: number): void {
    this.#inUse = Math.max(1, Math.min(this.#slots.length, Math.floor(count)));
    this.#closeSurplus();
    this.#openAhead();
    this.#smallFiles.wake();
  }

  /** The slots calls may use now. */
  #usable(): Slot[] {
    if (this.#ceilingUntil && Date.now() >= this.#ceilingUntil) {
      this.#ceiling = this.#slots.length;
      this.#ceilingUntil = 0;
    }
    return this.#slots.slice(0, Math.min(this.#inUse, this.#ceiling));
  }

  /** The usable slots whose connection is up. */
  #usableUp(): Slot[] {
    return this.#usable().filter((slot) => live(slot));
  }

  /** Closes idle connections in slots beyond those in use. */
  #closeSurplus(): void {
    for (const slot of this.#slots.slice(this.#usable().length)) {
      const connection = slot.connection;
      if (connection && slot.calls === 0) {
        slot.connection = undefined;
        void connection.close();
      }
    }
  }

  /**
   * The least busy slot. With `spread`, an empty one counts as idle, so parts
   * spread to new connections as the engine allows more, but at most
   * {@linkcode MAX_OPENING} log in at once; without, only a connection that
   * is up, if there is one.
   */
  #pick(spread = false): Slot {
    if (this.#closed) {
      throw new TransportError(`The transport of vessel "${this.vessel}" is closed`, "connection");
    }
    const up = spread ? [] : this.#usableUp();
    const usable = up.length > 0 ? up : this.#usable();
    const opening = this.#unauthenticated();
    const now = performance.now();
    let best: Slot | undefined;
    let bestLoad = Infinity;
    for (const slot of usable) {
      const load = live(slot)
        ? slot.calls + (spread && stalled(slot, now) ? STALLED_COST : 0)
        : slot.opening
        ? slot.calls + LOGIN_COST
        : opening >= MAX_OPENING
        ? Infinity
        : LOGIN_COST;
      if (load < bestLoad) {
        best = slot;
        bestLoad = load;
      }
    }
    // Every usable slot waits for a login: share a live connection beyond them (just shrunk).
    return best ?? this.#slots.find((slot) => live(slot)) ?? usable[0];
  }

  /**
   * The slot's connection, opened if needed, or another slot's that comes up
   * first with few calls, or one that is up and has room again: on a long,
   * busy link logins take seconds and vary by many, and a part must not wait
   * for a slow one while another connection is ready (wan: parts waited 1.7 s
   * for the governor's trial logins while the open connections ran dry, and
   * then finished last, in slow start). Another slot's too if the vessel
   * refuses this one.
   */
  async #connection(
    slot: Slot,
    pendingBytes = 0,
  ): Promise<{ slot: Slot; connection: SshConnection }> {
    const connection = live(slot);
    if (connection) return { slot, connection };
    const failedAhead = this.#failedAhead;
    this.#failedAhead = undefined;
    if (failedAhead !== undefined) throw failedAhead;
    const failure = this.#loginFailure;
    if (
      failure && performance.now() - failure.at < LOGIN_FAILURE_HOLD_MS &&
      !this.#slots.some((other) => live(other) || other.opening)
    ) throw failure.error;
    slot.connection = undefined;
    const opening = this.#startOpening(slot);
    try {
      for (;;) {
        const first = await Promise.race([
          opening.then(() => ({ up: slot, below: Infinity })),
          this.#loggedIn.promise.then((up) => ({ up, below: TAKE_OVER_BELOW })),
          this.#callEnded.promise.then((up) => ({ up, below: ROOM_BELOW })),
        ]);
        if (first.up === slot) return { slot, connection: await opening };
        const firstConnection = live(first.up);
        if (
          firstConnection && first.up.calls < first.below && this.#usable().includes(first.up)
        ) {
          opening.catch((error) => this.#refusedAhead(error));
          return moved(slot, first.up, firstConnection, pendingBytes);
        }
      }
    } catch (error) {
      if (error === this.#failedAhead) this.#failedAhead = undefined; // This call heard it.
      const others = this.#slots.filter((other) => other !== slot && live(other));
      const loggingIn = this.#slots.some((other) => other !== slot && other.opening);
      if ((others.length === 0 && !loggingIn) || this.#closed) {
        this.#loginFailure = { error, at: performance.now() };
        throw error;
      }
      // The vessel serves (or is letting in) other connections but refused one more (sshd's
      // MaxStartups, a firewall's limit): stay with those it lets in for a while.
      this.#refused(Math.max(1, others.length), error);
      const other = others.length > 0
        ? others.reduce((a, b) => a.calls <= b.calls ? a : b)
        : await this.#firstUp(slot);
      const otherConnection = other && live(other);
      if (!otherConnection) throw error;
      return moved(slot, other, otherConnection, pendingBytes);
    }
  }

  /** The first other slot whose login under way succeeds, or `undefined` if none does. */
  async #firstUp(except: Slot): Promise<Slot | undefined> {
    for (;;) {
      const openings = this.#slots
        .filter((other) => other !== except && other.opening)
        .map((other) => other.opening!.then(() => other, () => undefined));
      if (openings.length === 0) return undefined;
      const up = await Promise.race(openings);
      if (up) return up;
    }
  }

  /** Starts the slot's login unless it runs already; a success opens the rest in use. */
  #startOpening(slot: Slot): Promise<SshConnection> {
    if (slot.opening) return slot.opening;
    slot.authenticated = false;
    slot.opening = this.#open(slot).then(
      (connection) => {
        slot.opening = undefined;
        if (this.#closed) {
          void connection.close();
          throw new TransportError(
            `The transport of vessel "${this.vessel}" is closed`,
            "connection",
          );
        }
        slot.connection = connection;
        slot.rate = new AnswerRate();
        this.#admitted = true;
        this.#loginFailure = undefined;
        this.#smallFiles.wake();
        const loggedIn = this.#loggedIn;
        this.#loggedIn = Promise.withResolvers<Slot>();
        loggedIn.resolve(slot);
        this.#openAhead();
        return connection;
      },
      (error) => {
        slot.opening = undefined;
        throw error;
      },
    );
    return slot.opening;
  }

  /**
   * Logs in the connections in use that are not open yet, before calls need
   * them: on a long link a login takes seconds, and parts wait for it. Only
   * once the vessel has accepted one login, so a refused key is not offered
   * once per connection (which could get the shore banned), and its errors
   * surface on the calls; or once a TCP handshake showed a long link, where
   * waiting for that costs the logins 6 s (then a refused key is offered
   * {@linkcode MAX_OPENING} times at most).
   */
  #openAhead(): void {
    if (this.#closed || !(this.#admitted || this.#longLink)) return;
    let opening = this.#unauthenticated();
    for (const slot of this.#usable()) {
      if (opening >= MAX_OPENING) return;
      if (live(slot) || slot.opening) continue;
      opening++;
      this.#startOpening(slot).catch((error) => this.#refusedAhead(error));
    }
  }

  /** A login no call waits for failed: a refusal if others are open. */
  #refusedAhead(error: unknown): void {
    const open = this.connections.open;
    if (open > 0 && !this.#closed) this.#refused(open, error);
  }

  #refused(open: number, error: unknown): void {
    if (this.#ceilingUntil === 0) {
      this.#log.warn(
        `vessel "${this.vessel}" refused connection ${open + 1} while ${open} are open ` +
          `(${errorMessage(error)}); using at most ${open} for ${REFUSED_MS / 1000} s ` +
          "(raise MaxStartups/MaxSessions in its sshd_config, or set Connections)",
      );
    }
    this.#ceiling = Math.max(1, open);
    this.#ceilingUntil = Date.now() + REFUSED_MS;
  }

  /**
   * Logins under way that have not authenticated yet: sshd's MaxStartups
   * (10 by default) counts those, so {@linkcode MAX_OPENING} bounds them, not
   * logins already past authentication that only start their session (on a
   * 600 ms link, the last 2.9 s of a login's 8.7).
   */
  #unauthenticated(): number {
    return this.#slots.filter((slot) => slot.opening && !slot.authenticated).length;
  }

  async #open(slot: Slot): Promise<SshConnection> {
    if (this.carrier === "openssh") return await this.#openOpenSsh(slot);
    // Loaded here, with ssh2's client: a daemon over OpenSSH never needs them.
    this.#credentials ??= import("./auth.ts").then(({ loadCredentials }) =>
      loadCredentials(this.#config, this.#authEnvironment)
    ).then(
      (credentials) => {
        for (const reason of credentials.skipped) {
          this.#log.warn(`skipping a default key: ${reason}`);
        }
        return credentials;
      },
    );
    try {
      const credentials = await this.#credentials;
      return await SshConnection.open({
        vessel: this.#config,
        credentials,
        knownKeyTypes: await (await import("./host_key.ts")).knownKeyTypesOf(this.#config),
        log: this.#log,
        acknowledged: this.#acknowledged,
        signal: this.#closing.signal,
      });
    } catch (error) {
      // Keys, agent or passwords may be fixed before the next try.
      if (error instanceof TransportError && error.code === "auth") this.#credentials = undefined;
      throw error;
    }
  }

  /** Where the ssh binary was looked for, for messages. */
  #sshSearched(): string {
    return this.#config.sshCommand ? `at ${JSON.stringify(this.#config.sshCommand)}` : "on PATH";
  }

  /** The options and control directory of `ssh` (its `ssh -G` runs), found once. */
  #openSshSetup(command: string): Promise<OpenSshSetup> {
    this.#openSsh ??= prepareOpenSsh(this.#config, command, this.#authEnvironment).catch(
      (error) => {
        this.#openSsh = undefined;
        throw new TransportError(
          `Cannot connect to vessel "${this.vessel}": ${errorMessage(error)}`,
          "unsupported",
          { cause: error },
        );
      },
    );
    return this.#openSsh;
  }

  async #openOpenSsh(slot: Slot): Promise<SshConnection> {
    const command = this.#sshCommand;
    if (!command) {
      throw new TransportError(
        `Cannot connect to vessel "${this.vessel}": SSHClient = openssh, but there is no ssh ` +
          `binary ${this.#sshSearched()} (install openssh-client, set SSHCommand, or set ` +
          `SSHClient = builtin)`,
        "unsupported",
      );
    }
    const setup = await this.#openSshSetup(command);
    const started = performance.now();
    return await openOpenSsh({
      vessel: this.#config,
      log: this.#log,
      setup,
      controlPath: `${setup.dir}/c${this.#connectionsOpened++}`,
      acknowledged: this.#acknowledged,
      signal: this.#closing.signal,
      // The uid TempDir's check needs, asked beside the SFTP session's start: on wan (40 ms)
      // each takes about 4 round trips after the login (traced), so neither waits long.
      onCommandsReady: (run) => void this.#loginUid(run).catch(() => {}),
      onConnected: () => this.#connectedAfter(performance.now() - started),
      onAuthenticated: () => {
        const roundTrip = (performance.now() - started) / ROUND_TRIPS_TO_AUTHENTICATE;
        if (roundTrip >= LONG_LOGIN_ROUND_TRIP_MS) this.#loginRoundTripMs ??= roundTrip;
        slot.authenticated = true;
        // The credentials work: the other connections need not wait for this one's session.
        this.#admitted = true;
        this.#openAhead();
      },
    });
  }

  /**
   * Hears how long ssh took to get its TCP connection up: one round trip,
   * and ssh's start and name lookup. On a long link the other logins then
   * start at once, seconds before the vessel accepts the first (on `sat`,
   * 600 ms, a login takes 8.6 s, 5.8 s of it before authentication).
   */
  #connectedAfter(ms: number): void {
    if (ms < LONG_LOGIN_ROUND_TRIP_MS || this.#longLink) return;
    this.#longLink = true;
    this.#loginRoundTripMs ??= ms;
    this.#openAhead();
  }

  /** Reclassifies a failed write as "no-space" when the vessel's disk is (nearly) full. */
  async #noSpace(
    connection: SshConnection,
    dir: string,
    needed: number,
    error: unknown,
  ): Promise<unknown> {
    if (!hasStatus(error, SFTP_STATUS.FAILURE) || connection.closed) return error;
    const free = await freeBytes(connection, dir).catch(() => undefined);
    if (free === undefined || free >= needed) return error;
    return new TransportError(
      `no space left (${free} bytes free, ${needed} needed): ${errorMessage(error)}`,
      "no-space",
      { cause: error },
    );
  }
}

/**
 * Removes parts `0..count-1` (and their temp names) and then their
 * directory, all in one round trip; `false` when something else was left in
 * it, which a listing then finds. The part directory was made by us in a
 * TempDir checked private, so no one else can have put a link in its place.
 */
async function removeKnownParts(
  connection: SshConnection,
  partDir: string,
  count: number,
): Promise<boolean> {
  await connection.sftp(); // From here on requests leave in the order they are made.
  const results = await Promise.allSettled([
    // The temp names too: the slower copy of a part with a spare may be writing one still.
    ...Array.from({ length: count }, (_, index) => [
      partName(index),
      partTempName(index),
      spareTempName(index),
    ]).flat().map((name) => removeFile(connection, joinPath(partDir, name))),
    removeDirectory(connection, partDir),
  ]);
  const lost = results.find((result) =>
    result.status === "rejected" && result.reason instanceof TransportError
  );
  if (lost) throw (lost as PromiseRejectedResult).reason;
  return results.every((result) => result.status === "fulfilled");
}

/** The indices of the whole parts among a part directory's entries. */
function partsIn(entries: readonly { name: string }[] | undefined): Set<number> {
  const parts = new Set<number>();
  for (const entry of entries ?? []) {
    const index = parsePartName(entry.name);
    if (index !== undefined) parts.add(index);
  }
  return parts;
}

/**
 * A call counted on `from` (with `pendingBytes` of a part) runs on `to`'s
 * connection: counted there at once, so calls deciding in the same turn see it.
 */
function moved(
  from: Slot,
  to: Slot,
  connection: SshConnection,
  pendingBytes: number,
): { slot: Slot; connection: SshConnection } {
  from.calls--;
  to.calls++;
  from.pendingBytes -= pendingBytes;
  to.pendingBytes += pendingBytes;
  return { slot: to, connection };
}

/** Whether the slot's parts under way have had no answer for long (see {@linkcode STALLED_ROUND_TRIPS}). */
function stalled(slot: Slot, now: number): boolean {
  if (slot.parts === 0) return false;
  const roundTrip = live(slot)?.roundTripMs ?? 0;
  return now - slot.answeredAt > Math.max(STALLED_MS, STALLED_ROUND_TRIPS * roundTrip);
}

/** Names a part for {@linkcode RunOptions}. */
function partId(key: string, index: number): string {
  return `${key}/${index}`;
}

/** The slot's connection while it is open. */
function live(slot: Slot): SshConnection | undefined {
  return slot.connection && !slot.connection.closed ? slot.connection : undefined;
}

/** Turns any failure into a TransportError whose message starts with `action`. */
function classify(action: string, error: unknown): TransportError {
  if (error instanceof TransportError) {
    return new TransportError(`${action}: ${error.message}`, error.code, {
      cause: error,
      retryable: error.retryable,
    });
  }
  let code: TransportErrorCode = "failed";
  if (hasStatus(error, SFTP_STATUS.OP_UNSUPPORTED)) code = "unsupported";
  return new TransportError(`${action}: ${errorMessage(error)}`, code, { cause: error });
}

function checkAbsolute(path: string): void {
  if (!path.startsWith("/")) {
    throw new TypeError(`Cannot use vessel path ${quote(path)}: it is not absolute`);
  }
}

function quote(path: string): string {
  return JSON.stringify(path);
}
