/**
 * A file that is one part, written straight to its temp name beside the
 * destination in as few round trips as SFTP allows. The SFTP server handles
 * requests on one file in the order they arrive, so they are sent without
 * waiting for replies: an exclusive create in one round trip, then writes,
 * reads back, fsync and close in the next; or, on a long link, writes,
 * fstat, fsync and close, and the vessel hashes the file in a batch with
 * others (see hash_batch.ts). On a short link a small file's fsync can wait
 * for one flush of the vessel's file system with others (see
 * flush_batch.ts).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { parentOf, TransportError } from "../transport.ts";
import { commandError, sha256Of, SMALL_FILE } from "./assemble.ts";
import { hashCommand, parseSha256 } from "./commands.ts";
import { hasStatus, SFTP_STATUS, type SshConnection } from "./connection.ts";
import {
  changeModeOf,
  closeHandle,
  fstatHandle,
  fsyncHandle,
  lstatPath,
  makeDirectoryAhead,
  openHandle,
  openKept,
  readFile,
  removeFile,
  removeQuietly,
} from "./sftp_ops.ts";
import type { ResumeCheck } from "./resume.ts";

/** How {@linkcode putWholeFile} makes the file durable and creates directories. */
export interface PutWholeOptions {
  /** Flush the file to disk before returning. */
  readonly fsync: boolean;
  /** Milliseconds a command reading `bytes` may run. */
  readonly deadline: (bytes: number) => number;
  /**
   * Creates a missing directory and its parents; shared by concurrent calls,
   * so files arriving together in a new directory create it once.
   */
  readonly makeDirectory: (dir: string) => Promise<void>;
  /**
   * Whether to send a mkdir of the file's directory ahead of its create: a
   * directory this connection has not written to may be new, and finding
   * that out from the create costs two round trips.
   */
  readonly directoryMayBeNew?: boolean;
  /** Decides whether a file left by a try cut mid-way is completed (see resume.ts). */
  readonly resume?: ResumeCheck;
  /** Hashes small files on the vessel with others, when the link makes that pay. */
  readonly hashBatch?: BatchHashing;
  /** Flushes small files read back on the vessel with others instead of one by one. */
  readonly flushBatch?: BatchFlushing;
  /** Hears that the vessel holds every byte, before the file is hashed. */
  readonly written?: () => void;
  /** Permission bits the file gets once every byte is written (0600 until then). */
  readonly mode?: number;
}

/** Small files hashed on the vessel in batches instead of read back (see hash_batch.ts). */
export interface BatchHashing {
  /**
   * Whether it pays now: asked before the create (when earlier answers gave
   * the round trip) and again once the create is answered.
   */
  pays(): boolean;
  /** A file on `connection` will be hashed once written: its hasher starts beside the writes. */
  prepare(connection: SshConnection): void;
  /**
   * The sha256 of the vessel file `path`, `bytes` long, written on
   * `connection`, or `undefined` when the vessel could not hash it (the file
   * is then read back instead). Rejects if the link failed.
   */
  hash(path: string, bytes: number, connection: SshConnection): Promise<string | undefined>;
}

/** Small files made durable on the vessel together (see flush_batch.ts). */
export interface BatchFlushing {
  /** Whether it pays now (asked once the file's create is answered). */
  pays(): boolean;
  /**
   * Resolves `true` once the vessel file `path`, closed on `connection`, is
   * on disk; `false` when the vessel could not flush it so (it gets an fsync
   * of its own then). Rejects if the link failed.
   */
  flush(path: string, connection: SshConnection): Promise<boolean>;
}

/**
 * Writes `data` to `path` as a new file (one there is unlinked first, so a
 * writer left from an earlier try cannot reach the new one, unless
 * `options.resume` keeps it: then only the rest is written) and returns the
 * sha256 and size of what the vessel then holds: small files are read back
 * on the same handle and hashed here (or hashed by `options.hashBatch`),
 * larger ones are hashed by the vessel.
 * The parent directory is created only when the create fails for lack of
 * it, then tried once more. On error the file is removed.
 */
export async function putWholeFile(
  connection: SshConnection,
  path: string,
  data: Uint8Array,
  options: PutWholeOptions,
): Promise<{ sha256: string; size: number }> {
  // From here on requests leave in the order they are made (see SshConnection.request).
  await connection.sftp();
  // The create leaves before the server's extensions are known, which decide what follows
  // it: on a connection still starting, it leaves with the SFTP session's INIT.
  if (options.directoryMayBeNew) makeDirectoryAhead(connection, parentOf(path));
  const fsyncAnnounced = options.fsync
    ? connection.hasExtension("fsync@openssh.com")
    : Promise.resolve(false);
  fsyncAnnounced.catch(() => {}); // Awaited below.
  const isSmall = (fsyncOverSftp: boolean) =>
    data.byteLength <= SMALL_FILE && (fsyncOverSftp || !options.fsync);
  const resumeCheck = options.resume;
  // A small file is written (and read back) in one round trip: never worth resuming.
  const resume = resumeCheck &&
    (async (...args: Parameters<ResumeCheck>) =>
      isSmall(await fsyncAnnounced) ? 0 : await resumeCheck(...args));
  const opening = openFresh(connection, path, data, options.makeDirectory, resume);
  opening.catch(() => {}); // Awaited below.
  const fsyncOverSftp = await fsyncAnnounced;
  const small = isSmall(fsyncOverSftp);
  const [writeLength, readLength] = await Promise.all([
    connection.writeLength(),
    connection.maxReadLength(),
  ]);
  // The vessel's hasher session takes three round trips to answer (sshd opens its window
  // only once the command runs): started beside the create, it is ready for the hash.
  if (small && options.hashBatch?.pays()) options.hashBatch.prepare(connection);
  const { handle, offset } = await opening;
  // Never close twice: the server may already have given the handle's number to another file.
  let closing: Promise<void> | undefined;
  // The mode goes with the close, behind every write (the server handles them in order).
  const close = () =>
    closing ??= options.mode === undefined ? closeHandle(connection, handle) : settleAll([
      changeModeOf(connection, handle, options.mode),
      closeHandle(connection, handle),
    ]).then(() => {});
  try {
    if (small && options.hashBatch?.pays()) {
      options.hashBatch.prepare(connection); // if the create was the link's first answer
      const size = await writeClosing(connection, handle, data, {
        writeLength,
        fsync: fsyncOverSftp,
        close,
      });
      checkSize(size, data.byteLength);
      options.written?.();
      const sha256 = await options.hashBatch.hash(path, size, connection) ??
        sha256Of(await readFile(connection, path, size));
      return { sha256, size };
    }
    if (small) {
      const flushLater = fsyncOverSftp && options.flushBatch?.pays() === true;
      const stored = await writeReadBack(connection, handle, data, {
        writeLength,
        readLength,
        fsync: fsyncOverSftp && !flushLater,
        close,
      }) ?? await readFile(connection, path, data.byteLength);
      if (flushLater && !await options.flushBatch!.flush(path, connection)) {
        await fsyncPath(connection, path);
      }
      return { sha256: sha256Of(stored), size: stored.length };
    }
    await connection.writeAll(handle, data, offset);
    const [stats] = await settleAll([
      fstatHandle(connection, handle),
      fsyncOverSftp ? fsyncHandle(connection, handle) : undefined,
      close(),
    ]);
    checkSize(stats.size, data.byteLength);
    const command = hashCommand(path, options.fsync && !fsyncOverSftp);
    const result = await connection.exec(command, options.deadline(data.byteLength));
    const sha256 = result.code === 0 ? parseSha256(result.stdout) : undefined;
    if (!sha256) throw commandError(result);
    return { sha256, size: stats.size };
  } catch (error) {
    await close().catch(() => {});
    await removeQuietly(connection, path);
    throw error;
  }
}

/**
 * Creates `path` exclusively, for reading and writing: a new file that no
 * writer left from an earlier try can reach. If something is there, unlinks
 * it and creates the file again in the same round trip, unless `resume`
 * keeps a regular file there (`offset` is then where to carry on writing);
 * if the directory is missing, creates it and tries again.
 */
async function openFresh(
  connection: SshConnection,
  path: string,
  data: Uint8Array,
  makeDirectory: (dir: string) => Promise<void>,
  resume: ResumeCheck | undefined,
): Promise<{ handle: Buffer; offset: number }> {
  let madeDirectory = false;
  let removed = false;
  for (;;) {
    const [unlinked, opened] = await Promise.allSettled([
      removed ? removeFile(connection, path) : undefined,
      openHandle(connection, path, "wx+"),
    ]);
    if (opened.status === "fulfilled") {
      if (unlinked.status === "fulfilled") return { handle: opened.value, offset: 0 };
      await closeHandle(connection, opened.value).catch(() => {});
      throw unlinked.reason;
    }
    const error = opened.reason;
    if (!madeDirectory && hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) {
      madeDirectory = true;
      await makeDirectory(parentOf(path));
    } else if (!removed && hasStatus(error, SFTP_STATUS.FAILURE)) {
      removed = true; // SFTP v3 reports "exists" as a generic failure.
      const stats = resume ? await lstatPath(connection, path) : undefined;
      const offset = stats?.isFile() ? await resume!(path, stats, data) : 0;
      const handle = offset > 0
        ? await openKept(connection, path, { uid: stats!.uid, size: offset })
        : undefined;
      if (handle) return { handle, offset };
    } else throw unlinked.status === "rejected" ? unlinked.reason : error;
  }
}

/** Flushes the file at `path` to the vessel's disk. */
async function fsyncPath(connection: SshConnection, path: string): Promise<void> {
  const handle = await openHandle(connection, path, "r");
  await settleAll([fsyncHandle(connection, handle), closeHandle(connection, handle)]);
}

/**
 * Sends every write, then reads of the whole range, fsync and close, all
 * before the first reply; returns the bytes read back, or `undefined` if the
 * server answered a read short (the caller reads the file again). The file
 * was created exclusively, so nothing but these writes is in it.
 */
async function writeReadBack(
  connection: SshConnection,
  handle: Buffer,
  data: Uint8Array,
  sizes: { writeLength: number; readLength: number; fsync: boolean; close: () => Promise<void> },
): Promise<Uint8Array | undefined> {
  const size = data.byteLength;
  const stored = Buffer.alloc(size);
  const sent = sendWrites(connection, handle, data, sizes.writeLength);
  const writes = Array.isArray(sent) ? sent : await sent;
  let short = false;
  const reads: Promise<unknown>[] = [];
  for (let offset = 0; offset < size; offset += sizes.readLength) {
    const length = Math.min(sizes.readLength, size - offset);
    reads.push(
      connection.request<number>(
        "read",
        (sftp, done) =>
          sftp.read(handle, stored, offset, length, offset, (error, bytes) => done(error, bytes)),
      ).then((bytes) => {
        if (bytes !== length) short = true;
      }),
    );
  }
  await settleAll([
    sizes.fsync ? fsyncHandle(connection, handle) : undefined,
    sizes.close(),
    ...writes,
    ...reads,
  ]);
  return short ? undefined : stored;
}

/**
 * Sends every write, fstat, fsync and close before the first reply, and
 * returns the size the server then reports.
 */
async function writeClosing(
  connection: SshConnection,
  handle: Buffer,
  data: Uint8Array,
  options: { writeLength: number; fsync: boolean; close: () => Promise<void> },
): Promise<number> {
  const sent = sendWrites(connection, handle, data, options.writeLength);
  const writes = Array.isArray(sent) ? sent : await sent;
  const [stats] = await settleAll([
    fstatHandle(connection, handle),
    options.fsync ? fsyncHandle(connection, handle) : undefined,
    options.close(),
    ...writes,
  ]);
  return stats.size;
}

/**
 * Sends all of `data` to a new file at offset 0, in writes of `writeLength`,
 * without waiting for their answers; at once when the connection has room
 * for all of them (see {@linkcode SshConnection.writeRoom}), else each as
 * room comes, resolving once the last has left. Sent at once, the requests
 * the caller makes next leave in the same turn, beside the writes.
 */
function sendWrites(
  connection: SshConnection,
  handle: Buffer,
  data: Uint8Array,
  writeLength: number,
): Promise<void>[] | Promise<Promise<void>[]> {
  const source = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const lengthAt = (offset: number) => Math.min(writeLength, source.length - offset);
  const send = (offset: number) =>
    connection.write(handle, source, offset, lengthAt(offset), offset);
  const offsets: number[] = [];
  for (let offset = 0; offset < source.length; offset += writeLength) offsets.push(offset);
  const atOnce = offsets.length === 1
    ? connection.writeRoom(source.length) === undefined
    : connection.hasWriteRoom(source.length);
  if (atOnce) return offsets.map(send);
  return (async () => {
    const writes: Promise<void>[] = [];
    for (const offset of offsets) {
      const length = lengthAt(offset);
      for (let room = connection.writeRoom(length); room; room = connection.writeRoom(length)) {
        await room;
      }
      const write = send(offset);
      write.catch(() => {}); // settled by the caller; one failing while a later one waits
      writes.push(write);
    }
    return writes;
  })();
}

/** Awaits every promise (so none is left unobserved), then throws the first failure. */
async function settleAll<T extends readonly unknown[]>(
  promises: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((result) => result.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}

function checkSize(actual: number, expected: number): void {
  if (actual !== expected) {
    throw new TransportError(
      `the vessel holds ${actual} bytes after ${expected} were written`,
      "failed",
    );
  }
}
