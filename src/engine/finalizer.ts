/**
 * Moves a source file into `processed/` once every vessel holds it. Nothing
 * is moved through a symbolic link inside Location (a planted `processed ->
 * /root/.ssh` would otherwise receive the file), and nothing in processed/
 * is ever replaced: a newcomer whose name is taken gets a numbered name that
 * keeps its extension (`report.csv` -> `report.1.csv`).
 */
import type { DirectoryConfig } from "../config/types.ts";
import { errorMessage, logger } from "../log/logger.ts";
import type { FileRecord, Store } from "../store/store.ts";
import { PROCESSED_DIR } from "../watch/scan.ts";
import { TEMP_PREFIX } from "../../transports/transport.ts";
import { holdDirectory, inPinnedDirectory } from "./pinned_directory.ts";
import {
  lstatOrUndefined,
  sameVersion,
  type SourceStat,
  statSource,
  UnsafeSourceError,
} from "./source.ts";

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
  const now = statSource(location, file.relpath);
  if (now === undefined) {
    // Gone already: moved by an earlier run that died before forgetting it, or by someone else.
    store.removeFile(file.id);
    return "vanished";
  }
  const subdirs = file.relpath.split("/");
  const name = subdirs.pop()!;
  // The link of a run killed before it unlinked the source changed only the source's ctime:
  // that move is finished below, not the whole file sent again.
  const linkedBefore = () =>
    sameVersion({ ...now, ctimeMs: null }, file) && linkedEarlier(location, subdirs, name, now);
  if (!sameVersion(now, file) && !linkedBefore()) {
    store.fileChanged(file.id, now.size, now.mtimeMs, now);
    return "changed";
  }
  const moved = moveWithoutReplacing(location, subdirs, name, now);
  await store.grouped(() => store.removeFile(file.id));
  if (moved !== name) {
    const prefix = `${PROCESSED_DIR}/${subdirs.map((dir) => `${dir}/`).join("")}`;
    logger(`"${directory.name}/${file.relpath}"`).warn(
      `${prefix}${name} exists and is kept; this version moved to ${prefix}${moved}`,
    );
  }
  return "processed";
}

/**
 * Moves `location/subdirs…/name` (the file `identity`) to the same place
 * below `location/processed/` (made level by level, no symbolic link
 * followed) under `name` or the first free numbered name, and returns the
 * name used. A hard link claims the name atomically (it fails if the name
 * exists, and does not follow a link at the source), then the source is
 * unlinked. Where hard links are refused (a file system without them, or
 * `fs.protected_hardlinks` for another owner's file) the source is renamed
 * once its name is seen free, in the same synchronous step, from its
 * directory held open ({@linkcode holdDirectory}). Each step works in a
 * {@linkcode inPinnedDirectory}, so a directory swapped along either path can
 * neither receive the file nor lose another one.
 */
function moveWithoutReplacing(
  location: string,
  subdirs: readonly string[],
  name: string,
  identity: SourceStat,
): string {
  const source = [location, ...subdirs, name].join("/");
  const claim = (held?: string) =>
    inPinnedDirectory(
      location,
      [PROCESSED_DIR, ...subdirs],
      () => claimName(source, name, identity, held),
      { create: true },
    );
  let claimed = claim();
  if (claimed === undefined) {
    // A rename by the source's path took whatever a subdirectory swapped for a link meanwhile
    // led to: a user who could write one (whose own file a daemon not run as root may not link)
    // had a file of that name outside Location, the daemon's SSH key say, moved into processed/.
    using held = holdDirectory(location, subdirs);
    claimed = claim(held.path)!;
  }
  const { candidate, linked } = claimed;
  if (linked) {
    try {
      inPinnedDirectory(location, subdirs, () => removeIfSame(name, identity));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return candidate;
}

/**
 * Unlinks `name`, in the working directory, if it is still the file
 * `identity`. An unlink after a check would delete a new version renamed onto
 * the name between the two (a producer that writes a temp file and renames
 * it in): the name is renamed aside, which takes whatever is there at once,
 * and what is not `identity` is linked back (unless a newer one took the name
 * meanwhile, as it would have replaced it anyway). A crash in between, or a
 * link refused, leaves it aside under a dot name beside, never deleted.
 */
function removeIfSame(name: string, identity: SourceStat): void {
  const now = lstatOrUndefined(name);
  if (!now || !sameInode(now, identity)) return;
  const aside = `${TEMP_PREFIX}gone-${crypto.randomUUID().slice(0, 8)}`;
  Deno.renameSync(name, aside);
  if (!sameInode(Deno.lstatSync(aside), identity)) {
    try {
      Deno.linkSync(aside, name);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) {
        throw new Error(
          `a new version of "${name}" arrived as the delivered one was moved to processed/; ` +
            `it could not be put back (${errorMessage(error)}) and is kept as "${aside}" beside`,
        );
      }
    }
  }
  Deno.removeSync(aside);
}

/** Whether processed/ holds `name`, or a numbered name for it, as a link to the source. */
function linkedEarlier(
  location: string,
  subdirs: readonly string[],
  name: string,
  identity: SourceStat,
): boolean {
  try {
    return inPinnedDirectory(location, [PROCESSED_DIR, ...subdirs], () => {
      for (let n = 0;; n++) {
        const info = lstatOrUndefined(n === 0 ? name : numberedName(name, n));
        if (!info) return false;
        if (sameInode(info, identity)) return true;
      }
    });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * In the processed/ directory, the working one: links or renames `source` to a
 * free name. Renames only from `held`, the path of its directory held open;
 * without it, `undefined` when a link is refused.
 */
function claimName(
  source: string,
  name: string,
  identity: SourceStat,
  held?: string,
): { candidate: string; linked: boolean } | undefined {
  const from = held === undefined ? source : `${held}/${name}`;
  for (let n = 0;; n++) {
    const candidate = n === 0 ? name : numberedName(name, n);
    try {
      Deno.linkSync(from, candidate);
    } catch (error) {
      if (error instanceof Deno.errors.AlreadyExists) {
        // Linked by an earlier run that died before unlinking the source: finish that move.
        if (sameInode(Deno.lstatSync(candidate), identity)) return { candidate, linked: true };
        continue;
      }
      if (error instanceof Deno.errors.NotFound) throw error;
      if (held === undefined) return undefined;
      if (lstatOrUndefined(candidate)) continue;
      if (!sameInode(Deno.lstatSync(from), identity)) throw replaced(source);
      Deno.renameSync(from, candidate);
      if (!sameInode(Deno.lstatSync(candidate), identity)) {
        throw new UnsafeSourceError(
          `"${source}" was swapped while it was renamed into processed/: ` +
            `${candidate} there is another file, left for a person to look at`,
        );
      }
      return { candidate, linked: false };
    }
    if (!sameInode(Deno.lstatSync(candidate), identity)) {
      Deno.removeSync(candidate);
      throw replaced(source);
    }
    return { candidate, linked: true };
  }
}

function replaced(source: string): UnsafeSourceError {
  return new UnsafeSourceError(
    `"${source}" was replaced while it was moved to processed/; it stays where it is`,
  );
}

/** `report.csv` -> `report.1.csv`, `a.tar.gz` -> `a.1.tar.gz`, `README` -> `README.1`. */
export function numberedName(name: string, n: number): string {
  const match = /^(.+?)((?:\.tar)?\.[^.]{1,10})$/.exec(name);
  return match ? `${match[1]}.${n}${match[2]}` : `${name}.${n}`;
}

function sameInode(info: Deno.FileInfo, identity: SourceStat): boolean {
  return info.dev === identity.dev && info.ino === identity.ino;
}
