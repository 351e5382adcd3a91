/**
 * Work in a directory below a Location that no swap along its path can
 * redirect. Deno has no `openat(2)`, `linkat(2)` or `unlinkat(2)`, so the
 * process's working directory stands in for a directory descriptor: each
 * level is `lstat`ed (a symbolic link is refused), entered with `chdir`, and
 * `.` must then be the directory `lstat` saw. From there a relative name
 * resolves in that directory, whatever is renamed or swapped along its path
 * meanwhile: checking a path and then using it again resolved the path twice,
 * and a subdirectory swapped for a symlink in between let a move delete or
 * place files outside the Location.
 *
 * The work runs synchronously, so nothing else in this process runs, or
 * resolves a relative path, while the working directory is moved; every
 * path the daemon uses elsewhere is absolute. The working directory is put
 * back before the call returns.
 *
 * @module
 */
import { lstatOrUndefined, UnsafeSourceError } from "./source.ts";

/**
 * Runs `work` with the working directory at `root/names…`, reached without
 * following a symbolic link below `root`; with `create`, missing levels are
 * made. Throws {@linkcode UnsafeSourceError} when a level is a symbolic link,
 * not a directory, or was swapped while it was entered, and `NotFound` when
 * a level is missing.
 */
export function inPinnedDirectory<T>(
  root: string,
  names: readonly string[],
  work: () => T,
  options: { create?: boolean } = {},
): T {
  const home = Deno.cwd();
  try {
    Deno.chdir(root);
    let path = root;
    for (const name of names) {
      path = `${path}/${name}`;
      enter(name, path, options.create ?? false);
    }
    return work();
  } finally {
    restore(home);
  }
}

function enter(name: string, path: string, create: boolean): void {
  let info = lstatOrUndefined(name);
  if (!info && create) {
    try {
      Deno.mkdirSync(name);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    info = lstatOrUndefined(name);
  }
  if (!info) throw new Deno.errors.NotFound(`"${path}" is gone`);
  if (info.isSymlink || !info.isDirectory) {
    throw new UnsafeSourceError(
      `"${path}" is ${info.isSymlink ? "a symbolic link" : "not a directory"}; nothing is ` +
        `moved through it: replace it with a real directory`,
    );
  }
  Deno.chdir(name);
  const here = Deno.statSync(".");
  if (here.dev !== info.dev || here.ino !== info.ino) {
    throw new UnsafeSourceError(`"${path}" was swapped while it was entered; nothing is moved`);
  }
}

/** Goes back to the working directory the daemon had, or `/` if that one is gone. */
function restore(home: string): void {
  try {
    Deno.chdir(home);
  } catch {
    Deno.chdir("/");
  }
}

/** A directory held open, see {@linkcode holdDirectory}. */
export interface HeldDirectory extends Disposable {
  /** `/proc/self/fd/N`: a name below it resolves in the directory held, wherever that is now. */
  readonly path: string;
}

/** How often a descriptor shared with another open of the same directory is opened again. */
const HOLD_TRIES = 3;

/**
 * Holds `root/names…` (reached as {@linkcode inPinnedDirectory} does) open,
 * for a call that needs two directories at once (a rename): one is the
 * working directory, the other this. Deno tells no descriptor's number, so
 * the descriptor is found under /proc/self/fd by the directory's device and
 * inode, and taken only when it is the one open on that directory (a scan
 * may have it open too for a moment: then it is opened again). Throws
 * {@linkcode UnsafeSourceError} as {@linkcode inPinnedDirectory} does, or an
 * error when the descriptor cannot be told apart.
 */
export function holdDirectory(root: string, names: readonly string[]): HeldDirectory {
  return inPinnedDirectory(root, names, () => {
    for (let tries = 0; tries < HOLD_TRIES; tries++) {
      const dir = Deno.openSync(".");
      const held = dir.statSync();
      const matches = [];
      for (const { name } of Deno.readDirSync("/proc/self/fd")) {
        const info = statOrUndefined(`/proc/self/fd/${name}`);
        if (info?.dev === held.dev && info.ino === held.ino) matches.push(name);
      }
      if (matches.length === 1) {
        return { path: `/proc/self/fd/${matches[0]}`, [Symbol.dispose]: () => dir.close() };
      }
      dir.close();
    }
    throw new Error(
      `cannot tell the descriptor of "${[root, ...names].join("/")}" apart under /proc/self/fd`,
    );
  });
}

/** `Deno.statSync`, or `undefined` for a descriptor closed meanwhile (or any other failure). */
function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}
