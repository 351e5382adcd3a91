/**
 * The SFTP transport (the default): parts are uploaded over SFTP with many
 * write requests in flight, spread over a few SSH connections per vessel
 * (ssh_pool.ts);
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
  joinPath,
  LEFTOVER_KEY,
  leftoverAgeMs,
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
  type TransportLogger,
} from "../transport.ts";
import type { SftpVessel, SshClientKind } from "./options.ts";
import { leftoverTempCommand } from "./commands.ts";
import type { AuthEnvironment } from "./auth.ts";
import { hashFile, SMALL_FILE } from "./assemble.ts";
import { hasStatus, type RunCommand, SFTP_STATUS, type SshConnection } from "./connection.ts";
import { type RunBody, type RunOptions, SshPool } from "./ssh_pool.ts";
import { probeVessel } from "./probe.ts";
import { DirectorySyncs } from "./directory_sync.ts";
import { type BatchFlushing, type BatchHashing, putWholeFile } from "./put_whole.ts";
import { FlushBatcher } from "./flush_batch.ts";
import { HashBatcher } from "./hash_batch.ts";
import { flushDirectories, hashGroups, startHasher } from "./resident_hasher.ts";
import { SmallFileGate } from "./small_file_gate.ts";
import { type ResumeCheck, resumeCheck } from "./resume.ts";
import { SftpAssembly } from "./stream_assembly.ts";
import { checkTempDir, loginUid, preparePartDirectory } from "./private_temp_dir.ts";
import {
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
  /**
   * Below this round trip, with `Fsync`, small files and renames share one
   * flush of the vessel's file system (default {@linkcode BATCH_HASH_FROM_MS}).
   */
  readonly flushTogetherBelowMs?: number;
}

/** Commands get `Timeout` seconds per this many bytes they read, plus a base. */
const BYTES_PER_TIMEOUT = 16 << 20;
/**
 * Bytes one flush of a vessel's file system is given time for: it writes out
 * every dirty page there, a large file's being assembled beside too, and a
 * command past its deadline costs its connection.
 */
const FLUSH_BYTES = 1 << 30;
const KEY_PATTERN = /^[A-Za-z0-9_-]+$/;
/**
 * The round trip from which a small file is hashed on the vessel in a batch
 * rather than read back. On a LAN reading back costs less than a command;
 * on a WAN the bytes cross the link twice and the return leg, on streams
 * that start slow, finishes last (wan, 100 x 64 KiB: its last 0.3-0.45 s).
 */
const BATCH_HASH_FROM_MS = 10;
/**
 * The round trip from which a directory's fsync does not wait for the one in
 * flight (see directory_sync.ts): a journal commit on the vessel takes a few
 * milliseconds, and waiting took the last files of a burst one round trip
 * more.
 */
const PIPELINED_FSYNC_FROM_MS = 10;
/**
 * Files assembled whose connection their publish and the removal of their
 * parts may still use: one per file in flight, of which there are far fewer.
 */
const MAX_ASSEMBLED_ON = 256;
/** Directories a connection remembers having written to (see `#firstVisit`). */
const MAX_DIRECTORIES_SEEN = 4096;
/**
 * Tries a part or a one-part file gets when its connection breaks while
 * another is up: one more, since when the whole link is down every further
 * try adds a `Timeout` before the engine hears of it.
 */
const PUT_TRIES = 2;
/** Listings of a part directory that removing it may take (see {@linkcode SftpTransport.removeParts}). */
const REMOVE_PARTS_ROUNDS = 3;

/** A {@linkcode Transport} to a vessel over SSH/SFTP. */
export class SftpTransport implements Transport {
  readonly vessel: string;
  readonly capabilities: TransportCapabilities;
  /** The vessel's SSH connections: where each call runs. */
  readonly connections: SshPool;
  readonly #config: SftpVessel;
  readonly #log: TransportLogger;
  /** The connection each file was assembled on, where its directory was opened ahead. */
  readonly #assembledOn = new Map<string, SshConnection>();
  /**
   * By delivery key, the connection its file was assembled on, where its
   * parts are removed beside the publish: their requests then ride with the
   * publish's on a stream that just answered, and the delivery does not wait
   * for a second stream's losses too.
   */
  readonly #partsRemovedOn = new Map<string, SshConnection>();
  #uid?: Promise<number>;
  readonly #batchHashFromMs: number;
  readonly #flushTogetherBelowMs: number;
  readonly #smallFiles = new SmallFileGate(() => this.connections.upCount());
  /** Set once the vessel could not hash a batch: small files are read back from then on. */
  #batchHashFailed = false;
  readonly #hashBatching: BatchHashing = {
    pays: () =>
      !this.#batchHashFailed && (this.connections.roundTripMs ?? 0) >= this.#batchHashFromMs,
    prepare: (connection) => startHasher(connection, this.#deadline(0)),
    hash: (path, bytes, connection) =>
      this.#hashBatcher.hash(path, bytes, connection).catch((error) => {
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
  /** Set once the vessel could not flush small files together: each gets an fsync from then on. */
  #batchFlushFailed = false;
  readonly #flushBatching: BatchFlushing = {
    // Where small files are hashed in batches they get an fsync each, sent with their writes:
    // a flush would wait for its turn, a round trip or more.
    pays: () =>
      this.#config.fsync && !this.#batchFlushFailed &&
      (this.connections.roundTripMs ?? Infinity) < this.#flushTogetherBelowMs,
    flush: async (path, connection) => {
      // The hasher reads a directory per line: such a path is flushed alone, nothing failed.
      if (path.includes("\n")) return false;
      try {
        if (await this.#flushBatcher.flush(path, connection)) return true;
        this.#flushBatchCannot(
          "its `sync -f` failed, or its Linux is older than 5.8, whose syncfs does not report " +
            "a failed write",
        );
      } catch (error) {
        if (error instanceof TransportError && error.code === "connection") throw error;
        this.#flushBatchCannot(errorMessage(error));
      }
      return false;
    },
  };
  readonly #flushBatcher = new FlushBatcher<SshConnection>((dirs, on) =>
    this.connections.run(
      `Cannot flush small files on vessel "${this.vessel}"`,
      (connection) => flushDirectories(connection, dirs, this.#deadline(FLUSH_BYTES)),
      { on },
    )
  );
  readonly #hashBatcher = new HashBatcher((groups, bytes, on) =>
    this.connections.run(
      `Cannot hash a batch of small files on vessel "${this.vessel}"`,
      (connection) => hashGroups(connection, groups, this.#deadline(bytes)),
      { on },
    )
  );
  /** Flushes destination directories, one fsync for the files renamed into one together. */
  readonly #directorySyncs = new DirectorySyncs<SshConnection, Buffer>({
    // Read-only: OpenSSH's sftp-server opens a directory like a file, and fsync of a directory
    // descriptor flushes its entries (a vessel that loses power keeps the renamed file).
    open: (connection, dir) => openHandle(connection, dir, "r"),
    fsync: fsyncHandle,
    close: closeHandle,
  }, { pipelined: () => (this.connections.roundTripMs ?? 0) >= PIPELINED_FSYNC_FROM_MS });
  /** Directories being created, so files arriving together in a new one create it once. */
  readonly #makingDirectories = new Map<string, Promise<void>>();
  /** Per connection, the directories it has sent a file's create or a mkdir to. */
  readonly #directoriesSeen = new WeakMap<SshConnection, Set<string>>();
  /** Connections that found the directories above TempDir safe (see preparePartDirectory). */
  readonly #ancestorsChecked = new WeakSet<SshConnection>();

  /** Connects lazily: nothing happens until the first call. */
  constructor(vessel: SftpVessel, options: SftpTransportOptions = {}) {
    if (!vessel.address) {
      throw new TypeError(`Cannot use SFTP for vessel "${vessel.name}": it has no Address`);
    }
    this.vessel = vessel.name;
    this.#config = vessel;
    this.#log = options.log ?? silentLogger;
    this.#batchHashFromMs = options.batchHashFromMs ?? BATCH_HASH_FROM_MS;
    this.#flushTogetherBelowMs = options.flushTogetherBelowMs ?? BATCH_HASH_FROM_MS;
    this.connections = new SshPool(vessel, {
      connections: options.connections,
      authEnvironment: options.authEnvironment,
      log: this.#log,
      changed: () => this.#smallFiles.wake(),
      // The uid TempDir's check needs, asked beside the SFTP session's start: on wan (40 ms)
      // each takes about 4 round trips after the login (traced), so neither waits long.
      commandsReady: (run) => void this.#loginUid(run).catch(() => {}),
    });
    // One part per connection fills its SSH window; more only cost memory.
    this.capabilities = { parallelParts: this.connections.max, parallelDeliveries: 8 };
  }

  /** The SSH carrier: the system's OpenSSH client, or ssh2 in this process. */
  get carrier(): SshClientKind {
    return this.connections.carrier;
  }

  /** Which SSH client carries this vessel's connections, for logs and `check`. */
  describeCarrier(): string {
    return this.connections.describeCarrier();
  }

  async prepare(key: string, destination: string): Promise<Set<number>> {
    const partDir = this.#partDir(key);
    checkAbsolute(destination);
    const action = `Cannot prepare the part directory of "${key}" and the directory of ` +
      `${quote(destination)} on vessel "${this.vessel}"`;
    return await this.connections.run(action, async (connection) => {
      const [fresh] = await Promise.all([
        preparePartDirectory(connection, this.#config.tempDir, partDir, {
          vessel: this.vessel,
          uid: this.#loginUid((command, deadlineMs) => connection.exec(command, deadlineMs)),
          ancestorsChecked: this.#ancestorsChecked,
        }),
        makeDirectories(connection, parentOf(destination)),
      ]);
      return fresh ? new Set<number>() : partsIn(await readDirectory(connection, partDir));
    });
  }

  /**
   * The login user's uid, asked once per transport: as soon as a login can
   * run commands (see {@linkcode SshPoolOptions.commandsReady}), or by the first call that
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
    return await this.connections.run(
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
    if (!this.connections.stalledPart(partId(key, index))) return undefined;
    const idle = this.connections.fastestIdle();
    if (!idle) return undefined;
    const action = `Cannot put a spare copy of part ${index} of "${key}" on vessel ` +
      `"${this.vessel}"`;
    // Pinned to the idle connection (counted there before this returns), with no try
    // elsewhere: the first copy is still under way.
    return this.connections.run(
      action,
      (connection, answered) =>
        writeFile(connection, joinPath(partDir, spareTempName(index)), data, {
          renameTo: joinPath(partDir, partName(index)),
          acknowledged: answered,
        }),
      { on: idle, part: { bytes: data.byteLength, bytesAfter } },
    );
  }

  /**
   * Runs `body` as {@linkcode SshPool.run} does, and again when the connection it ran on broke
   * while another is up: one of many streams dropped (on a lossy link, one
   * stuck in TCP's backoff for `Timeout`) must not fail the file, and back
   * off the whole vessel, while the others carry on. The next try resumes
   * from a copy of what the vessel holds (see resume.ts), so a broken
   * connection's late writes land in the file it left, not in the one
   * completed and verified. The broken connection may not be
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
        return await this.connections.run(action, (connection, answered) => {
          ranOn = connection;
          return body(connection, answered);
        }, options);
      } catch (error) {
        const broken = error instanceof TransportError && error.code === "connection";
        const elsewhere = this.connections.upBesides(ranOn);
        if (!broken || tries >= PUT_TRIES || this.connections.closed || !elsewhere) throw error;
        this.#log.info(`${what}: sending it again on another connection (${errorMessage(error)})`);
      }
    }
  }

  startAssembly(key: string, count: number, destination: string, mode?: number): Assembly {
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
      mode,
      stallMs: this.#deadline(0),
      run: (body) => this.connections.run(action, body),
      lastPartAnnounced: (connection) => {
        remember(this.#partsRemovedOn, key, connection);
        this.#publishAhead(connection, tempPath, destination);
      },
    });
  }

  async putWhole(
    key: string,
    destination: string,
    data: Uint8Array,
    mode?: number,
  ): Promise<Assembled> {
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
              directoryMayBeNew: this.#firstVisit(connection, parentOf(destination)),
              resume: this.#resumeCheck(connection),
              hashBatch: this.#hashBatching,
              flushBatch: this.#flushBatching,
              mode,
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
    return await this.connections.run(
      action,
      (connection) => hashFile(connection, path, (bytes) => this.#deadline(bytes)),
    );
  }

  async publish(tempPath: string, destination: string): Promise<void> {
    checkAbsolute(tempPath);
    checkAbsolute(destination);
    const assembledOn = this.#assembledOn.get(tempPath);
    this.#assembledOn.delete(tempPath);
    const action = `Cannot publish ${quote(tempPath)} as ${quote(destination)} on vessel ` +
      `"${this.vessel}"`;
    return await this.connections.run(action, async (connection) => {
      // Known without waiting on a connection that is up: the rename then leaves ahead of the
      // part removals made beside it, not behind a hundred of them.
      const posixRename = connection.extensionNow("posix-rename@openssh.com") ??
        await connection.hasExtension("posix-rename@openssh.com");
      const syncDirectory = this.#config.fsync &&
        (connection.extensionNow("fsync@openssh.com") ??
          await connection.hasExtension("fsync@openssh.com"));
      if (!posixRename) {
        throw new TransportError(
          "its SFTP server lacks posix-rename@openssh.com, so an existing file cannot be " +
            "replaced atomically (use OpenSSH's sftp-server on the vessel)",
          "unsupported",
        );
      }
      if (syncDirectory && this.#flushBatching.pays()) {
        // On a short link the rename waits for a flush of the file system shared with the
        // files closed or renamed meanwhile: one journal commit, where a directory's fsync
        // commits it for the few files renamed into that directory together.
        await renameOver(connection, tempPath, destination);
        if (await this.#flushBatching.flush(destination, connection)) return;
        await this.#directorySyncs.sync(connection, parentOf(destination));
        return;
      }
      // Requests leave in the order they are made, and the server handles them in that order:
      // the directory's fsync (shared with the files renamed into it meanwhile) after the
      // rename. Two round trips in all, or one when the directory was opened ahead.
      await Promise.all([
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
    remember(this.#assembledOn, tempPath, connection);
    if (this.#flushBatching.pays()) return; // No directory fsync: see publish().
    void connection.hasExtension("fsync@openssh.com").then((has) => {
      if (has && !connection.closed) {
        this.#directorySyncs.openAhead(connection, parentOf(destination));
      }
    }, () => {});
  }

  async removeLeftovers(options: LeftoverOptions): Promise<number> {
    const action = `Cannot remove old leftovers on vessel "${this.vessel}"`;
    const { tempDir } = this.#config;
    // A vessel judged unsafe gets no cleanup at all, below destinations neither: deliveries
    // to it are refused too, whoever could plant in TempDir may have planted there as well,
    // and the error tells the operator what to fix.
    const entries = await this.connections.run(action, async (connection) => {
      const there = await checkTempDir(connection, tempDir, {
        vessel: this.vessel,
        uid: this.#loginUid((command, deadlineMs) => connection.exec(command, deadlineMs)),
      });
      return there ? await readDirectory(connection, tempDir) : undefined;
    }) ?? [];
    let removed = 0;
    for (const entry of entries) {
      if (!LEFTOVER_KEY.test(entry.name) || options.keep.has(entry.name)) continue;
      if (entry.mtime >= (Date.now() - leftoverAgeMs(entry.name, options)) / 1000) continue;
      await this.removeParts(entry.name);
      removed++;
    }
    for (const destination of options.destinations) {
      checkAbsolute(destination);
      const { others } = options;
      const command = leftoverTempCommand(
        destination,
        options.olderThanMs / 60_000,
        others && { instanceId: others.instanceId, minutes: others.olderThanMs / 60_000 },
      );
      // find may be missing, or the destination not exist yet: nothing to remove then.
      const result = await this.connections.run(
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
    const assembledOn = this.#partsRemovedOn.get(key);
    this.#partsRemovedOn.delete(key);
    return await this.connections.run(action, async (connection) => {
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
    }, { on: assembledOn });
  }

  async remove(path: string): Promise<void> {
    checkAbsolute(path);
    this.#assembledOn.delete(path);
    const action = `Cannot remove ${quote(path)} on vessel "${this.vessel}"`;
    return await this.connections.run(action, (connection) => removeFile(connection, path));
  }

  async freeSpace(destination: string): Promise<SpaceInfo | undefined> {
    checkAbsolute(destination);
    const action = `Cannot find the free space for ${quote(destination)} on vessel ` +
      `"${this.vessel}"`;
    return await this.connections.run(action, async (connection) => {
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
      ok: this.connections.hasClient,
      detail: this.describeCarrier(),
    };
    if (!client.ok) return [client];
    const items = await probeVessel(
      this.#config,
      () => this.connections.anyConnection(),
      destinations,
    );
    const loggedIn = items.some((item) => item.check === "auth" && item.ok);
    return [client, ...items, ...loggedIn ? [await this.connections.probeConnections()] : []];
  }

  connectAhead(connections?: number): Promise<void> {
    return this.connections.connectAhead(connections);
  }

  async close(): Promise<void> {
    const closing = this.connections.close();
    this.#smallFiles.close(
      new TransportError(`The transport of vessel "${this.vessel}" is closed`, "connection"),
    );
    await closing;
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

  /**
   * Whether `dir` is new to `connection`, remembering it from now on. A
   * directory removed later only costs the round trips of finding it missing.
   */
  #firstVisit(connection: SshConnection, dir: string): boolean {
    let seen = this.#directoriesSeen.get(connection);
    if (!seen) this.#directoriesSeen.set(connection, seen = new Set());
    if (seen.has(dir)) return false;
    // A daemon's life of directories is not kept: past this many, each is visited anew.
    if (seen.size >= MAX_DIRECTORIES_SEEN) seen.clear();
    seen.add(dir);
    return true;
  }

  #flushBatchCannot(why: string): void {
    if (this.#batchFlushFailed) return;
    this.#batchFlushFailed = true;
    this.#log.warn(
      `vessel "${this.vessel}" could not flush small files together (${why}); ` +
        "each gets an fsync of its own instead",
    );
  }

  /** How long a command reading `bytes` may run before the connection is dropped. */
  #deadline(bytes: number): number {
    return this.#config.timeout * 1000 * (3 + bytes / BYTES_PER_TIMEOUT);
  }

  /** Resumes files cut mid-way (resume.ts), saying so in the log. */
  #resumeCheck(connection: SshConnection): ResumeCheck {
    const check = resumeCheck(
      connection,
      (bytes) => this.#deadline(bytes),
      () => this.#loginUid((command, deadlineMs) => connection.exec(command, deadlineMs)),
    );
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

/** Sets `key` in `byKey`, forgetting the oldest beyond {@linkcode MAX_ASSEMBLED_ON}. */
function remember(byKey: Map<string, SshConnection>, key: string, connection: SshConnection): void {
  byKey.delete(key);
  byKey.set(key, connection);
  while (byKey.size > MAX_ASSEMBLED_ON) byKey.delete(byKey.keys().next().value!);
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

/** Names a part for {@linkcode RunOptions}. */
function partId(key: string, index: number): string {
  return `${key}/${index}`;
}

function checkAbsolute(path: string): void {
  if (!path.startsWith("/")) {
    throw new TypeError(`Cannot use vessel path ${quote(path)}: it is not absolute`);
  }
}

function quote(path: string): string {
  return JSON.stringify(path);
}
