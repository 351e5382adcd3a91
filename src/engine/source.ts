/**
 * Reading source files on the shore: stat, parts, hash. Nothing is read
 * through a symbolic link inside the directory's Location, and every open
 * checks that it reached the queued file (device and inode), so a swapped
 * subdirectory can never make another file pass for the queued one.
 */
import { createHash } from "node:crypto";
import type { PartData } from "../../transports/transport.ts";

/**
 * What identifies one version of a source file: device, inode, size, mtime
 * and ctime (a replacement copied with `cp -p`, `tar x` or `rsync -a` keeps
 * size and mtime, not inode and ctime). `null` identity fields are unknown
 * (files queued before they were recorded) and match anything.
 */
export interface SourceStat {
  readonly size: number;
  readonly mtimeMs: number;
  readonly dev?: number | null;
  readonly ino?: number | null;
  readonly ctimeMs?: number | null;
  /** Permission bits, carried to the vessel (as scp does); not part of the version. */
  readonly mode?: number;
}

/** Thrown when a source file changed or vanished while it was being read. */
export class SourceChangedError extends Error {
  constructor(path: string, now: SourceStat | undefined) {
    super(
      now
        ? `Source "${path}" changed while it was read (now ${now.size} bytes)`
        : `Source "${path}" vanished`,
    );
    this.name = "SourceChangedError";
  }
}

/** Thrown when a source is reached through a symbolic link inside its Location. */
export class UnsafeSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeSourceError";
  }
}

/** The identity of what `Deno.lstat` or `FsFile.stat` saw. */
export function toSourceStat(info: Deno.FileInfo): SourceStat {
  return {
    size: info.size,
    mtimeMs: info.mtime?.getTime() ?? 0,
    dev: info.dev ?? null,
    ino: info.ino ?? null,
    ctimeMs: info.ctime?.getTime() ?? null,
    mode: (info.mode ?? 0) & 0o777,
  };
}

/**
 * Checks that every directory between `location` and `relpath`'s file is a
 * real directory, not a symbolic link; throws {@linkcode UnsafeSourceError}.
 * False when one of them is gone.
 */
export function checkSourceDirs(location: string, relpath: string): boolean {
  const names = relpath.split("/");
  let dir = location.replace(/\/+$/, "");
  for (const name of names.slice(0, -1)) {
    dir = `${dir}/${name}`;
    const info = lstatOrUndefined(dir);
    if (!info) return false;
    if (info.isSymlink) {
      throw new UnsafeSourceError(
        `Refusing "${location}/${relpath}": "${dir}" is a symbolic link inside the ` +
          `directory's Location (nothing is read or moved through one)`,
      );
    }
    if (!info.isDirectory) return false;
  }
  return true;
}

/**
 * The stat of the regular file at `relpath` below `location`, or `undefined`
 * if it is gone. Throws {@linkcode UnsafeSourceError} if a directory on the
 * way is a symbolic link.
 */
export function statSource(location: string, relpath: string): SourceStat | undefined {
  if (!checkSourceDirs(location, relpath)) return undefined;
  const info = lstatOrUndefined(`${location}/${relpath}`);
  return info?.isFile ? toSourceStat(info) : undefined;
}

/** `Deno.lstatSync`, or `undefined` when nothing is there (or a level is not a directory). */
export function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw error;
  }
}

/** Whether two stats describe the same version of a file. */
export function sameVersion(a: SourceStat | undefined, b: SourceStat | undefined): boolean {
  return a !== undefined && b !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs &&
    sameOrUnknown(a.dev, b.dev) && sameOrUnknown(a.ino, b.ino) &&
    sameOrUnknown(a.ctimeMs, b.ctimeMs);
}

function sameOrUnknown(a: number | null | undefined, b: number | null | undefined): boolean {
  return a === null || a === undefined || b === null || b === undefined || a === b;
}

/**
 * Smallest part a file is cut into to spread it over connections: below it
 * a part's own round trips (create, rename, append) cost more than the
 * parallel streams win. On `sat` (600 ms, 0.5 % loss, CUBIC) an 8 MiB file
 * in 32 parts, not 16, leaves parts for the connections that log in after
 * the first ones, and fewer bytes behind each slow stream at the end.
 */
const MIN_SPREAD_PART = 256 << 10;
/**
 * Files up to this size stay one part: the part directory and the
 * assembly cost them more round trips than a second stream wins.
 */
const WHOLE_UP_TO = 512 << 10;
/** Spread parts are whole multiples of this, the largest SFTP write most servers take. */
const PART_ALIGN = 64 << 10;

/**
 * The part size for a file of `size` bytes on a vessel of up to
 * `connections` connections: `chunkSize` (the operator's ChunkSize, the
 * largest part) unless that leaves fewer than two parts per connection; then
 * smaller, down to 256 KiB (a file of up to 512 KiB stays whole), so every
 * connection has parts to the end of the file and no single slow stream
 * carries its tail. It depends on nothing that changes while the daemon
 * runs, so a later attempt, or a restart, finds the parts an earlier one
 * left in the same layout.
 */
export function partSizeFor(size: number, chunkSize: number, connections: number): number {
  if (connections <= 1) return chunkSize;
  if (size <= WHOLE_UP_TO) return Math.min(chunkSize, WHOLE_UP_TO);
  const spread = Math.ceil(size / (2 * connections) / PART_ALIGN) * PART_ALIGN;
  return Math.min(chunkSize, Math.max(MIN_SPREAD_PART, spread));
}

/** How many parts a file of `size` bytes has: an empty file still has one. */
export function partCount(size: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(size / chunkSize));
}

/**
 * Opens `path` for reading and checks that the opened file is `expected`
 * (same device, inode, size, mtime, ctime): a path swapped meanwhile throws
 * {@linkcode SourceChangedError} instead of reading another file.
 */
function openExpected(path: string, expected: SourceStat): Deno.FsFile {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new SourceChangedError(path, undefined);
    throw error;
  }
  try {
    const opened = toSourceStat(file.statSync());
    if (!sameVersion(opened, expected)) throw new SourceChangedError(path, opened);
    return file;
  } catch (error) {
    file.close();
    throw error;
  }
}

/** The length of part `index` of a file of `size` bytes cut into `chunkSize` parts. */
export function partLength(size: number, chunkSize: number, index: number): number {
  return Math.max(0, Math.min(chunkSize, size - index * chunkSize));
}

/** Reads part `index` of the file `expected` cut into `chunkSize` parts, whole. */
export async function readPart(
  path: string,
  index: number,
  chunkSize: number,
  expected: SourceStat,
): Promise<Uint8Array> {
  using part = openPart(path, index, chunkSize, expected);
  return await part.read(0, new Uint8Array(part.byteLength));
}

/** A part of a source file read as it is sent; see {@linkcode openPart}. */
export interface SourcePart extends PartData, Disposable {
  /** The first failed read's error (a {@linkcode SourceChangedError} if the file shrank). */
  readonly failure: unknown;
}

/**
 * Part `index` of the file `expected` cut into `chunkSize` parts, read as it
 * is sent: the file is opened once, checked to be `expected`, and read in
 * turn for each request, so only the bytes in flight are in memory. Close
 * it (`using`) once the part is put.
 */
export function openPart(
  path: string,
  index: number,
  chunkSize: number,
  expected: SourceStat,
): SourcePart {
  const start = index * chunkSize;
  const byteLength = partLength(expected.size, chunkSize, index);
  const file = openExpected(path, expected);
  // One descriptor, one position: reads take turns, and seek only when not in order.
  let turn: Promise<unknown> = Promise.resolve();
  let failure: unknown;
  let position = 0;
  const readAt = async (offset: number, into: Uint8Array): Promise<Uint8Array> => {
    if (position !== start + offset) {
      position = await file.seek(start + offset, Deno.SeekMode.Start);
    }
    try {
      for (let filled = 0; filled < into.length;) {
        const read = await file.read(into.subarray(filled));
        if (read === null) throw new SourceChangedError(path, toSourceStat(await file.stat()));
        filled += read;
        position += read;
      }
    } catch (error) {
      position = -1; // Unknown now: the next read seeks.
      throw error;
    }
    return into;
  };
  return {
    byteLength,
    get failure() {
      return failure;
    },
    read(offset, into) {
      if (offset < 0 || offset + into.length > byteLength) {
        throw new RangeError(
          `Cannot read bytes ${offset}+${into.length} of a ${byteLength}-byte part`,
        );
      }
      const result = turn.then(() => readAt(offset, into));
      turn = result.catch((error) => failure ??= error);
      return result;
    },
    [Symbol.dispose]() {
      file.close();
    },
  };
}

/**
 * The sha256 of a file, guaranteed to belong to `expected`: the opened file
 * is checked before and after reading, and a difference throws.
 */
export async function hashSource(path: string, expected: SourceStat): Promise<string> {
  const hash = createHash("sha256");
  // Sized for the file: a 1 MiB buffer per small file would be most of a small-file queue's garbage.
  const buffer = new Uint8Array(Math.min(1 << 20, Math.max(1 << 16, expected.size + 1)));
  let total = 0;
  using file = openExpected(path, expected);
  for (let read; (read = await file.read(buffer)) !== null;) {
    hash.update(buffer.subarray(0, read));
    total += read;
  }
  const after = toSourceStat(file.statSync());
  if (total !== expected.size || !sameVersion(after, expected)) {
    throw new SourceChangedError(path, after);
  }
  return hash.digest("hex");
}
