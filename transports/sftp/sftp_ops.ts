/**
 * File operations over one {@linkcode SshConnection}'s SFTP session, shared
 * by the transport and its probe. They reject with the server's SFTP status
 * errors or a {@linkcode TransportError}; callers add what they were doing.
 *
 * @module
 */
import type { Stats } from "./_ssh2.ts";
import { Buffer } from "node:buffer";
import { parentOf, type PartData, TransportError } from "../transport.ts";
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "../private_dir.ts";
import { hasStatus, SFTP_STATUS, type SshConnection } from "./connection.ts";
import type { ResumeCheck } from "./resume.ts";

/** One directory entry: its name, size and mtime (seconds). */
export interface Entry {
  readonly name: string;
  readonly size: number;
  readonly mtime: number;
}

/** Metadata of a path, or `undefined` if nothing is there. */
export async function statPath(
  connection: SshConnection,
  path: string,
): Promise<Stats | undefined> {
  try {
    return await connection.request<Stats>("stat", (sftp, done) => sftp.stat(path, done));
  } catch (error) {
    if (hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) return undefined;
    throw error;
  }
}

/** Metadata of a path itself (a link is not followed), or `undefined` if nothing is there. */
export async function lstatPath(
  connection: SshConnection,
  path: string,
): Promise<Stats | undefined> {
  try {
    return await connection.request<Stats>("lstat", (sftp, done) => sftp.lstat(path, done));
  } catch (error) {
    if (hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) return undefined;
    throw error;
  }
}

/** `path` with every symbolic link in it resolved, by the server. */
export function realPath(connection: SshConnection, path: string): Promise<string> {
  return connection.request<string>("realpath", (sftp, done) => sftp.realpath(path, done));
}

/** Whether `stats` describe a file of `uid` that only they may read or write (0600). */
export function isPrivateFileOf(stats: Stats, uid: number): boolean {
  return stats.uid === uid && (stats.mode & 0o7777) === PRIVATE_FILE_MODE;
}

/**
 * Opens the file a {@linkcode ResumeCheck} kept at `path`, to write on after
 * its end ("r+": neither created nor truncated), or `undefined` when what
 * opened is not that file. An open follows a link, and a user who can write
 * the directory can swap one in after the check (in a destination directory
 * shared with others): the opened file must be a regular file of `kept.uid`,
 * 0600 and `kept.size` bytes long, as the check left it.
 */
export async function openKept(
  connection: SshConnection,
  path: string,
  kept: { readonly uid: number; readonly size: number },
): Promise<Buffer | undefined> {
  const handle = await openHandle(connection, path, "r+");
  const opened = await fstatHandle(connection, handle).catch(() => undefined);
  if (opened?.isFile() && isPrivateFileOf(opened, kept.uid) && opened.size === kept.size) {
    return handle;
  }
  await closeHandle(connection, handle).catch(() => {});
  return undefined;
}

/** Creates directory `path` with mode 0700; false when something is there already. */
export async function makePrivateDirectory(
  connection: SshConnection,
  path: string,
): Promise<boolean> {
  try {
    await connection.request<void>(
      "mkdir",
      (sftp, done) => sftp.mkdir(path, { mode: PRIVATE_DIR_MODE }, done),
    );
    return true;
  } catch (error) {
    // SFTP v3 reports "exists" as a generic failure; the caller's lstat tells what is there.
    if (hasStatus(error, SFTP_STATUS.FAILURE)) return false;
    throw error;
  }
}

/**
 * Creates `path` exclusively with mode 0600 and opens it with `flags` ("wx"
 * or "wx+"). A regular file there (left by an earlier try) is unlinked
 * first; anything else (a symlink, a fifo) is refused, so a planted link
 * can never redirect the write.
 */
export async function createPrivateFile(
  connection: SshConnection,
  path: string,
  flags: "wx" | "wx+",
): Promise<Buffer> {
  return (await openPrivateFile(connection, path, flags)).handle;
}

/**
 * {@linkcode createPrivateFile}, except that a regular file left there is
 * kept, opened without truncation, when `resume` returns a byte to carry on
 * writing from (see resume.ts); `offset` is that byte, or 0.
 */
export async function openPrivateFile(
  connection: SshConnection,
  path: string,
  flags: "wx" | "wx+",
  data?: Uint8Array | PartData,
  resume?: ResumeCheck,
): Promise<{ handle: Buffer; offset: number }> {
  try {
    return { handle: await openHandle(connection, path, flags, PRIVATE_FILE_MODE), offset: 0 };
  } catch (error) {
    if (!hasStatus(error, SFTP_STATUS.FAILURE)) throw error;
    const stats = await lstatPath(connection, path);
    if (!stats) throw error;
    if (!stats.isFile()) {
      const kind = stats.isSymbolicLink() ? "a symbolic link" : "not a regular file";
      throw new TransportError(
        `${JSON.stringify(path)} is ${kind} that ContentMonster did not create; refusing to ` +
          `write through it (remove it)`,
        "failed",
        { cause: error },
      );
    }
    const offset = resume && data ? await resume(path, stats, data) : 0;
    const handle = offset > 0
      ? await openKept(connection, path, { uid: stats.uid, size: offset })
      : undefined;
    if (handle) return { handle, offset };
  }
  await removeFile(connection, path);
  return { handle: await openHandle(connection, path, flags, PRIVATE_FILE_MODE), offset: 0 };
}

/**
 * Sets the permission bits of the open file `handle` (at most `0o777`).
 * Through the handle, never a path: a path may lead through a link that a
 * user who can write the directory swapped in.
 */
export function changeModeOf(
  connection: SshConnection,
  handle: Buffer,
  mode: number,
): Promise<void> {
  return connection.request<void>("chmod", (sftp, done) => sftp.fchmod(handle, mode & 0o777, done));
}

/** The entries of a directory, or `undefined` if it does not exist. */
export async function readDirectory(
  connection: SshConnection,
  path: string,
): Promise<Entry[] | undefined> {
  try {
    const list = await connection.request<
      { filename: string; attrs: { size?: number; mtime?: number } }[]
    >(
      "read a directory",
      (sftp, done) => sftp.readdir(path, done),
    );
    return list.map((item) => ({
      name: item.filename,
      size: Number(item.attrs.size ?? 0),
      mtime: Number(item.attrs.mtime ?? 0),
    }));
  } catch (error) {
    if (hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) return undefined;
    throw error;
  }
}

/**
 * Creates `path` and missing parents (`mkdir -p`), one level at a time, with
 * `mode` (less the server's umask) when given. The mkdir and a stat leave
 * together (the server answers in order): a directory there already costs
 * one round trip, not two.
 */
export async function makeDirectories(
  connection: SshConnection,
  path: string,
  mode?: number,
): Promise<void> {
  await connection.sftp(); // From here on requests leave in the order they are made.
  const [made, stats] = await Promise.allSettled([
    mkdir(connection, path, mode),
    statPath(connection, path),
  ]);
  if (made.status === "fulfilled") return;
  // A lost connection must stay a connection error, not turn into mkdir's "Failure".
  if (made.reason instanceof TransportError) throw made.reason;
  if (stats.status === "rejected" && stats.reason instanceof TransportError) throw stats.reason;
  const found = stats.status === "fulfilled" ? stats.value : undefined;
  if (found?.isDirectory()) return;
  if (found) throw new Error(`${JSON.stringify(path)} exists and is not a directory`);
  if (hasStatus(made.reason, SFTP_STATUS.NO_SUCH_FILE) && path !== "/") {
    await makeDirectories(connection, parentOf(path), mode);
    await makeDirectory(connection, path, mode);
    return;
  }
  throw made.reason;
}

/**
 * Sends a mkdir of `path` whose answer does not matter: it only goes ahead
 * of requests that need the directory on the same connection (the server
 * handles them in order), which say themselves whether it is there.
 */
export function makeDirectoryAhead(connection: SshConnection, path: string): void {
  connection.request<void>("mkdir", (sftp, done) => sftp.mkdir(path, done)).catch(() => {});
}

/** Creates one directory; no error if a directory is there already. */
async function makeDirectory(
  connection: SshConnection,
  path: string,
  mode?: number,
): Promise<void> {
  try {
    await mkdir(connection, path, mode);
  } catch (error) {
    await mustBeDirectory(connection, path, error);
  }
}

function mkdir(connection: SshConnection, path: string, mode?: number): Promise<void> {
  return connection.request<void>(
    "mkdir",
    (sftp, done) => mode === undefined ? sftp.mkdir(path, done) : sftp.mkdir(path, { mode }, done),
  );
}

/** Succeeds if `path` is a directory (mkdir failed since it exists), else throws. */
async function mustBeDirectory(
  connection: SshConnection,
  path: string,
  mkdirError: unknown,
): Promise<void> {
  // A lost connection must stay a connection error, not turn into mkdir's "Failure".
  if (mkdirError instanceof TransportError) throw mkdirError;
  const stats = await statPath(connection, path).catch((error) => {
    if (error instanceof TransportError) throw error;
    return undefined;
  });
  if (stats?.isDirectory()) return;
  if (stats) throw new Error(`${JSON.stringify(path)} exists and is not a directory`);
  throw mkdirError;
}

/** Removes a file; no error if it does not exist. */
export async function removeFile(connection: SshConnection, path: string): Promise<void> {
  try {
    await connection.request<void>("unlink", (sftp, done) => sftp.unlink(path, done));
  } catch (error) {
    if (!hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) throw error;
  }
}

/** Removes a file if possible, ignoring every error (cleanup after a failure). */
export async function removeQuietly(connection: SshConnection, path: string): Promise<void> {
  if (connection.closed) return;
  await removeFile(connection, path).catch(() => {});
}

/** Removes an empty directory; no error if it does not exist. */
export async function removeDirectory(connection: SshConnection, path: string): Promise<void> {
  try {
    await connection.request<void>("rmdir", (sftp, done) => sftp.rmdir(path, done));
  } catch (error) {
    if (!hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) throw error;
  }
}

/**
 * Writes `data` to `path`, created with {@linkcode createPrivateFile}, with
 * pipelined requests; with `resume`, a file left by a try cut mid-way is
 * completed instead (see {@linkcode openPrivateFile}). With `renameTo`, the
 * whole file then takes that name (replacing what is there). On failure
 * the partial file is removed if the connection still allows it.
 */
export async function writeFile(
  connection: SshConnection,
  path: string,
  data: Uint8Array | PartData,
  options: {
    resume?: ResumeCheck;
    renameTo?: string;
    /** Hears the bytes the vessel holds: those resumed (`resumed`), then each write answered. */
    acknowledged?: (bytes: number, resumed?: boolean) => void;
    /** Hears that the last write requests are leaving (see {@linkcode SshConnection.writeAll}). */
    ending?: () => void;
  } = {},
): Promise<void> {
  const { handle, offset } = await openPrivateFile(connection, path, "wx", data, options.resume);
  if (offset > 0) options.acknowledged?.(offset, true);
  const allSent = Promise.withResolvers<void>();
  const written = connection.writeAll(handle, data, offset, {
    allSent: allSent.resolve,
    ending: options.ending,
    acknowledged: options.acknowledged,
  });
  written.catch(() => {}); // awaited below, maybe after the close
  try {
    await Promise.race([allSent.promise, written]);
  } catch (error) {
    await closeHandle(connection, handle).catch(() => {});
    await removeQuietly(connection, path);
    throw error;
  }
  // The close and the rename leave right behind the last write, not after its answer or each
  // other's: the server handles them in order, and on a long link every round trip at the end
  // of a file counts. A write that fails still fails the call, and its file goes, under
  // either name.
  const { renameTo } = options;
  const [wrote, closed, renamed] = await Promise.allSettled([
    written,
    closeHandle(connection, handle),
    renameTo === undefined ? undefined : renameReplacing(connection, path, renameTo, true),
  ]);
  // Some file systems report write errors (NFS: no space) only on close.
  const failed = [wrote, closed].find((result) => result.status === "rejected");
  if (failed) {
    await removeQuietly(connection, path);
    if (renameTo !== undefined && renamed.status === "fulfilled") {
      await removeQuietly(connection, renameTo);
    }
    throw (failed as PromiseRejectedResult).reason;
  }
  if (renamed.status === "rejected") {
    await removeQuietly(connection, path);
    throw renamed.reason;
  }
}

/**
 * Reads the `size` bytes of the file at `path` with pipelined requests,
 * checking that the file has exactly that size.
 */
export async function readFile(
  connection: SshConnection,
  path: string,
  size: number,
): Promise<Uint8Array> {
  const handle = await openHandle(connection, path, "r");
  try {
    return await readHandle(connection, handle, path, size);
  } finally {
    // Nothing depends on closing a read-only handle: do not wait for it.
    closeHandle(connection, handle).catch(() => {});
  }
}

/**
 * Writes `data` to `path` (created with {@linkcode createPrivateFile}), reads
 * it back on the same handle, optionally flushes it to disk, and returns the
 * bytes read back. On failure the file is removed.
 */
export async function writeAndReadBack(
  connection: SshConnection,
  path: string,
  data: Uint8Array,
  options: { sync: boolean; mode?: number },
): Promise<Uint8Array> {
  const handle = await createPrivateFile(connection, path, "wx+");
  try {
    await connection.writeAll(handle, data);
    const stored = await readHandle(connection, handle, path, data.byteLength);
    // The mode leaves with the fsync (the server handles them in order), and is answered before
    // the close: a failed one must not leave the handle closed for the cleanup to close again.
    const moded = options.mode === undefined
      ? undefined
      : changeModeOf(connection, handle, options.mode);
    moded?.catch(() => {}); // awaited below, after the fsync
    if (options.sync) await fsyncHandle(connection, handle);
    await moded;
    await closeHandle(connection, handle);
    return stored;
  } catch (error) {
    await closeHandle(connection, handle).catch(() => {});
    await removeQuietly(connection, path);
    throw error;
  }
}

async function readHandle(
  connection: SshConnection,
  handle: Buffer,
  path: string,
  size: number,
): Promise<Uint8Array> {
  const buffer = new Uint8Array(size);
  const chunk = await connection.maxReadLength();
  const reads: Promise<void>[] = [];
  for (let offset = 0; offset < size; offset += chunk) {
    reads.push(readRange(connection, handle, buffer, offset, Math.min(chunk, size - offset)));
  }
  const [stats] = await Promise.all([fstatHandle(connection, handle), ...reads]);
  if (stats.size !== size) {
    throw new Error(`${JSON.stringify(path)} has ${stats.size} bytes, expected ${size}`);
  }
  return buffer;
}

/**
 * Opens `path` with fopen-style `flags` ("r", "w", "w+", "wx+"); a file it
 * creates gets `mode` (0600 when not given); resolves with the handle.
 */
export function openHandle(
  connection: SshConnection,
  path: string,
  flags: string,
  mode = PRIVATE_FILE_MODE,
): Promise<Buffer> {
  return connection.request<Buffer>(
    `open (${flags})`,
    (sftp, done) => sftp.open(path, flags as "r", { mode }, done),
  );
}

async function readRange(
  connection: SshConnection,
  handle: Buffer,
  into: Uint8Array,
  offset: number,
  length: number,
): Promise<void> {
  const target = Buffer.from(into.buffer, into.byteOffset, into.byteLength);
  while (length > 0) {
    const position = offset;
    const wanted = length;
    const read = await connection.request<number>(
      "read",
      (sftp, done) =>
        sftp.read(handle, target, position, wanted, position, (error, bytes) => done(error, bytes)),
    );
    if (read === 0) throw new Error(`the file ended at byte ${offset}`);
    offset += read;
    length -= read;
  }
}

/**
 * Renames `from` over `to` with posix-rename@openssh.com, which the caller
 * has seen announced: the SFTP session is open, so the request leaves in
 * this call, and requests made after it are handled after it.
 */
export function renameOver(connection: SshConnection, from: string, to: string): Promise<void> {
  return connection.request<void>(
    "posix-rename",
    (sftp, done) => sftp.ext_openssh_rename(from, to, (error) => done(error)),
  );
}

/**
 * Renames `from` onto `to`, replacing it atomically with
 * `posix-rename@openssh.com`. Without that extension, and only when
 * `allowReplace` says the target may vanish for a moment (parts, never
 * published files), removes `to` first.
 */
export async function renameReplacing(
  connection: SshConnection,
  from: string,
  to: string,
  allowReplace: boolean,
): Promise<void> {
  if (await connection.hasExtension("posix-rename@openssh.com")) {
    return await renameOver(connection, from, to);
  }
  if (!allowReplace) throw new Error("the SFTP server lacks posix-rename@openssh.com");
  await removeFile(connection, to);
  await connection.request<void>("rename", (sftp, done) => sftp.rename(from, to, done));
}

/**
 * Free bytes (for unprivileged users) of the file system holding `path` or
 * its nearest existing ancestor; `undefined` without `statvfs@openssh.com`.
 */
export async function freeBytes(
  connection: SshConnection,
  path: string,
): Promise<number | undefined> {
  if (!(await connection.hasExtension("statvfs@openssh.com"))) return undefined;
  for (let current = path;; current = parentOf(current)) {
    try {
      const info = await connection.request<{ f_bavail: number; f_frsize: number }>(
        "statvfs",
        (sftp, done) => sftp.ext_openssh_statvfs(current, done),
      );
      return Number(info.f_bavail) * Number(info.f_frsize);
    } catch (error) {
      if (!hasStatus(error, SFTP_STATUS.NO_SUCH_FILE) || current === "/") throw error;
    }
  }
}

/** Metadata of an open file. */
export function fstatHandle(connection: SshConnection, handle: Buffer): Promise<Stats> {
  return connection.request<Stats>("fstat", (sftp, done) => sftp.fstat(handle, done));
}

/** Flushes an open file to disk with `fsync@openssh.com`. */
export function fsyncHandle(connection: SshConnection, handle: Buffer): Promise<void> {
  return connection.request<void>(
    "fsync",
    (sftp, done) => sftp.ext_openssh_fsync(handle, (error) => done(error)),
  );
}

/** Closes an open file; some file systems (NFS) report write errors only here. */
export function closeHandle(connection: SshConnection, handle: Buffer): Promise<void> {
  return connection.request<void>("close", (sftp, done) => sftp.close(handle, done));
}
