/**
 * Scanning a source directory: every regular file below it, with its path
 * relative to the directory.
 *
 * What counts as a source file (the same rules apply to watcher events):
 * - Only regular files. Symlinks are neither followed nor reported: a link
 *   could point outside the tree or at a file that is still being written,
 *   and moving it to `processed/` would move the link, not the data.
 * - Names starting with `.` are ignored at any depth, for files and for
 *   directories: writers' temp files and our own temp names
 *   (`TEMP_PREFIX`) start with a dot.
 * - `processed/` at the top of the directory is ours (where finished files
 *   go) and is never reported. A `processed/` deeper down is an ordinary
 *   name: only `<Location>/processed/` holds finished files.
 *
 * @module
 */
import { TEMP_PREFIX } from "../../transports/transport.ts";
import { logger } from "../log/logger.ts";

/** The subdirectory at the top of a location where finished files are moved. */
export const PROCESSED_DIR = "processed";

/** One regular file found by a scan. */
export interface ScannedFile {
  /** Path relative to the scanned location, "/"-separated ("a/b/c.txt"). */
  readonly relpath: string;
  readonly size: number;
  readonly mtimeMs: number;
  /** Inode number, when the platform has one; a renamed-in file has a new one. */
  readonly ino: number | null;
  readonly dev?: number | null;
  readonly ctimeMs?: number | null;
}

/** Whether a single path component names something we never report. */
export function isIgnoredName(name: string): boolean {
  return name.startsWith(".") || name.startsWith(TEMP_PREFIX);
}

/** Whether a relative path ("a/b/c.txt") lies in an ignored place. */
export function isIgnoredPath(relpath: string): boolean {
  const names = relpath.split("/");
  return names[0] === PROCESSED_DIR || names.some(isIgnoredName);
}

/**
 * Lists every regular file below `location` (absolute), skipping the
 * top-level `processed/`, dot names and symlinks. With `under` (a relative
 * directory path), only that subtree is scanned; relpaths stay relative to
 * `location`. Throws if `location/under` cannot be read; files and
 * subdirectories that vanish during the scan are skipped silently, and
 * unreadable subdirectories are skipped with a warning.
 */
export async function scanDirectory(
  location: string,
  under = "",
  unaddressable: string[] = [],
): Promise<ScannedFile[]> {
  const files: ScannedFile[] = [];
  const start = under ? `${location}/${under}` : location;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(start));
  } catch (error) {
    throw new Error(`Cannot scan directory "${start}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  await scanEntries(location, under, entries, files, unaddressable);
  return files;
}

/**
 * Whether `relpath` below `location` is a name Deno cannot open: a name that
 * is not valid UTF-8 reaches JavaScript with U+FFFD in place of its bad
 * bytes, and that string names another path (or none).
 */
function unreachable(location: string, relpath: string): boolean {
  if (!relpath.includes("\uFFFD")) return false;
  try {
    Deno.lstatSync(`${location}/${relpath}`);
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}

/** Stats a scan makes before it lets other work run. */
const STATS_PER_TURN = 4096;

async function scanEntries(
  location: string,
  dir: string,
  entries: Deno.DirEntry[],
  files: ScannedFile[],
  unaddressable: string[],
): Promise<void> {
  const subdirs: string[] = [];
  const candidates: string[] = [];
  // Two names that decode to one string: the second is a name that is not UTF-8 (and the
  // first may be too), where the string reaches a file all the same.
  const decodedWithBadBytes = new Set<string>();
  for (const entry of entries) {
    if (isIgnoredName(entry.name) || entry.isSymlink) continue;
    const relpath = dir ? `${dir}/${entry.name}` : entry.name;
    const seenBefore = decodedWithBadBytes.has(entry.name);
    if (entry.name.includes("\uFFFD")) decodedWithBadBytes.add(entry.name);
    if (seenBefore || unreachable(location, relpath)) {
      unaddressable.push(relpath);
      continue;
    }
    if (entry.isDirectory) {
      if (dir || entry.name !== PROCESSED_DIR) subdirs.push(relpath);
    } else if (entry.isFile) {
      candidates.push(relpath);
    }
  }
  for (const [i, relpath] of candidates.entries()) {
    // The stats are synchronous (~2 µs each, an async one ~40 µs): a turn now and then
    // lets the links and the metrics answer while a huge directory is scanned.
    if (i > 0 && i % STATS_PER_TURN === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    const file = statFile(location, relpath);
    if (file) files.push(file);
  }
  for (const subdir of subdirs) {
    let children: Deno.DirEntry[];
    try {
      children = await Array.fromAsync(Deno.readDir(`${location}/${subdir}`));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory)) {
        logger(`directory "${location}"`).warn(
          `Cannot scan subdirectory "${subdir}", skipped: ${(error as Error).message}`,
        );
      }
      continue;
    }
    await scanEntries(location, subdir, children, files, unaddressable);
  }
}

function statFile(location: string, relpath: string): ScannedFile | undefined {
  try {
    const info = Deno.lstatSync(`${location}/${relpath}`);
    if (!info.isFile) return undefined;
    return {
      relpath,
      size: info.size,
      mtimeMs: info.mtime?.getTime() ?? 0,
      ino: info.ino,
      dev: info.dev,
      ctimeMs: info.ctime?.getTime() ?? null,
    };
  } catch {
    // Vanished (or became unreadable) between readDir and lstat: not a file to report now.
    return undefined;
  }
}
