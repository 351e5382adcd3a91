/** Reading source files on the shore: stat, parts, hash. */
import { createHash } from "node:crypto";

/** What identifies one version of a source file. */
export interface SourceStat {
  readonly size: number;
  readonly mtimeMs: number;
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

/** The size and mtime of a regular file, or `undefined` if it is gone. */
export async function statSource(path: string): Promise<SourceStat | undefined> {
  try {
    const info = await Deno.lstat(path);
    if (!info.isFile) return undefined;
    return { size: info.size, mtimeMs: info.mtime?.getTime() ?? 0, mode: (info.mode ?? 0) & 0o777 };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Whether two stats describe the same version of a file. */
export function sameVersion(a: SourceStat | undefined, b: SourceStat | undefined): boolean {
  return a !== undefined && b !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** How many parts a file of `size` bytes has: an empty file still has one. */
export function partCount(size: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(size / chunkSize));
}

/**
 * Reads part `index` of a file of `size` bytes cut into `chunkSize` parts,
 * into `buffer` when given (the result is a view of it), so a long upload
 * reuses a few buffers instead of leaving garbage collection a trail of them.
 */
export async function readPart(
  path: string,
  index: number,
  chunkSize: number,
  size: number,
  buffer?: Uint8Array,
): Promise<Uint8Array> {
  const offset = index * chunkSize;
  const length = Math.max(0, Math.min(chunkSize, size - offset));
  const data = buffer && buffer.length >= length
    ? buffer.subarray(0, length)
    : new Uint8Array(length);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new SourceChangedError(path, undefined);
    throw error;
  }
  using _file = file;
  await file.seek(offset, Deno.SeekMode.Start);
  for (let filled = 0; filled < length;) {
    const read = await file.read(data.subarray(filled));
    if (read === null) throw new SourceChangedError(path, await statSource(path));
    filled += read;
  }
  return data;
}

/**
 * The sha256 of a file, guaranteed to belong to `expected`: the file is
 * stat-ed before and after reading, and a difference throws.
 */
export async function hashSource(path: string, expected: SourceStat): Promise<string> {
  const before = await statSource(path);
  if (!sameVersion(before, expected)) throw new SourceChangedError(path, before);
  const hash = createHash("sha256");
  const buffer = new Uint8Array(1 << 20);
  let total = 0;
  {
    using file = await Deno.open(path);
    for (let read; (read = await file.read(buffer)) !== null;) {
      hash.update(buffer.subarray(0, read));
      total += read;
    }
  }
  const after = await statSource(path);
  if (total !== expected.size || !sameVersion(after, expected)) {
    throw new SourceChangedError(path, after);
  }
  return hash.digest("hex");
}
