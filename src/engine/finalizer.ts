/**
 * Moves a source file into `processed/` once every vessel holds it. Nothing
 * is moved through a symbolic link inside Location (a planted `processed ->
 * /root/.ssh` would otherwise receive the file), and nothing in processed/
 * is ever replaced: a newcomer whose name is taken gets a numbered name that
 * keeps its extension (`report.csv` -> `report.1.csv`).
 */
import type { DirectoryConfig } from "../config/types.ts";
import { logger } from "../log/logger.ts";
import type { FileRecord, Store } from "../store/store.ts";
import { PROCESSED_DIR } from "../watch/scan.ts";
import { sameVersion, type SourceStat, statSource, UnsafeSourceError } from "./source.ts";

/** What finalizing a file did. */
export type FinalizeOutcome = "processed" | "vanished" | "changed";

/**
 * Moves a fully delivered file to `<Location>/processed/<relpath>` (or a
 * numbered name beside it) and forgets it. A source that changed since it
 * was sent is queued again instead.
 */
export async function finalizeFile(
  store: Store,
  directory: DirectoryConfig,
  file: FileRecord,
): Promise<FinalizeOutcome> {
  const location = directory.location.replace(/\/+$/, "");
  const now = await statSource(location, file.relpath);
  if (now === undefined) {
    // Gone already: moved by an earlier run that died before forgetting it, or by someone else.
    store.removeFile(file.id);
    return "vanished";
  }
  if (!sameVersion(now, file)) {
    store.fileChanged(file.id, now.size, now.mtimeMs, now);
    return "changed";
  }
  const slash = file.relpath.lastIndexOf("/");
  const subdir = slash < 0 ? "" : file.relpath.slice(0, slash);
  const name = file.relpath.slice(slash + 1);
  const dir = await processedDirectory(location, subdir);
  const moved = await moveWithoutReplacing(`${location}/${file.relpath}`, dir, name, now);
  await store.grouped(() => store.removeFile(file.id));
  if (moved !== name) {
    const prefix = `${PROCESSED_DIR}/${subdir ? `${subdir}/` : ""}`;
    logger(`"${directory.name}/${file.relpath}"`).warn(
      `${prefix}${name} exists and is kept; this version moved to ${prefix}${moved}`,
    );
  }
  return "processed";
}

/** Creates `<location>/processed/<subdir>` level by level, refusing any symbolic link. */
async function processedDirectory(location: string, subdir: string): Promise<string> {
  let dir = location;
  for (const name of [PROCESSED_DIR, ...(subdir ? subdir.split("/") : [])]) {
    dir = `${dir}/${name}`;
    // Usually there: one lstat, not a failing mkdir and an lstat per file moved.
    let info = await lstatOrUndefined(dir);
    if (!info) {
      try {
        await Deno.mkdir(dir);
      } catch (error) {
        if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      }
      info = await Deno.lstat(dir);
    }
    if (info.isSymlink || !info.isDirectory) {
      throw new UnsafeSourceError(
        `"${dir}" is ${info.isSymlink ? "a symbolic link" : "not a directory"}; nothing is ` +
          `moved through it: replace it with a real directory`,
      );
    }
  }
  return dir;
}

/**
 * Moves `source` (the file `identity`) into `dir` under `name`, or the first
 * free numbered name, and returns the name used. A hard link claims the name
 * atomically (it fails if the name exists, and does not follow a link at
 * `source`), then the source is unlinked; file systems without hard links
 * fall back to a check, then rename.
 */
async function moveWithoutReplacing(
  source: string,
  dir: string,
  name: string,
  identity: SourceStat,
): Promise<string> {
  for (let n = 0;; n++) {
    const candidate = n === 0 ? name : numberedName(name, n);
    const target = `${dir}/${candidate}`;
    try {
      await Deno.link(source, target);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) {
        // Linked by an earlier run that died before unlinking the source: finish that move.
        if (sameInode(await Deno.lstat(target), identity)) return await unlinkSource(candidate);
        continue;
      }
      if (error instanceof Deno.errors.NotFound) throw error;
      if (await exists(target)) continue;
      await Deno.rename(source, target);
      return candidate;
    }
    if (!sameInode(await Deno.lstat(target), identity)) {
      await Deno.remove(target);
      throw new UnsafeSourceError(
        `"${source}" was replaced while it was moved to processed/; it stays where it is`,
      );
    }
    return await unlinkSource(candidate);
  }

  async function unlinkSource(candidate: string): Promise<string> {
    if (sameInode(await Deno.lstat(source), identity)) await Deno.remove(source);
    return candidate;
  }
}

/** `report.csv` -> `report.1.csv`, `a.tar.gz` -> `a.1.tar.gz`, `README` -> `README.1`. */
export function numberedName(name: string, n: number): string {
  const match = /^(.+?)((?:\.tar)?\.[^.]{1,10})$/.exec(name);
  return match ? `${match[1]}.${n}${match[2]}` : `${name}.${n}`;
}

function sameInode(info: Deno.FileInfo, identity: SourceStat): boolean {
  return info.dev === identity.dev && info.ino === identity.ino;
}

async function lstatOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

async function exists(path: string): Promise<boolean> {
  return await lstatOrUndefined(path) !== undefined;
}
