/**
 * Creating files and directories for the local transport without trusting
 * what is already there: nothing is opened through a link or truncated.
 *
 * @module
 */
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from "./private_dir.ts";
import type { AncestorLookup, DirectoryStat } from "./private_dir.ts";

/**
 * Creates `path` exclusively with mode 0600 and opens it for reading and
 * writing. A regular file there (left by an earlier try) is unlinked first;
 * anything else (a symlink, a fifo) is refused, so a planted link can never
 * redirect the write.
 */
export async function createPrivateFile(path: string): Promise<Deno.FsFile> {
  const options = { read: true, write: true, createNew: true, mode: PRIVATE_FILE_MODE };
  try {
    return await Deno.open(path, options);
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
  const info = await Deno.lstat(path);
  if (!info.isFile) {
    throw new Error(
      `${JSON.stringify(path)} is ${describeKind(info)} that ContentMonster did not create; ` +
        `refusing to write through it (remove it)`,
    );
  }
  await Deno.remove(path);
  return await Deno.open(path, options);
}

/**
 * Gives the file open as `file`, made at `path`, the permission bits `mode`
 * (at most `0o777`). Deno has no `fchmod`: the name is first checked to lead
 * to the open file, not to a link swapped in, then changed by name.
 */
export async function setModeOf(file: Deno.FsFile, path: string, mode: number): Promise<void> {
  const [opened, named] = await Promise.all([file.stat(), Deno.lstat(path)]);
  if (named.isSymlink || named.dev !== opened.dev || named.ino !== opened.ino) {
    throw new Error(`${JSON.stringify(path)} was replaced while it was written`);
  }
  await Deno.chmod(path, mode & 0o777);
}

/** Creates directory `path` with mode 0700; false when something is there already. */
export async function makePrivateDirectory(path: string): Promise<boolean> {
  try {
    await Deno.mkdir(path, { mode: PRIVATE_DIR_MODE });
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    throw error;
  }
}

/** {@linkcode checkAncestors} on this machine's filesystem. */
export const localLookup: AncestorLookup = {
  lstat: (path) =>
    Deno.lstat(path).then(directoryStat, (error) => {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }),
  realPath: (path) => Deno.realPath(path),
};

/** What {@linkcode privateDirProblem} needs, from `Deno.lstat`. */
export function directoryStat(info: Deno.FileInfo): DirectoryStat {
  return {
    isDirectory: info.isDirectory,
    isSymlink: info.isSymlink,
    uid: info.uid ?? -1,
    mode: info.mode ?? 0,
  };
}

function describeKind(info: Deno.FileInfo): string {
  if (info.isSymlink) return "a symbolic link";
  if (info.isDirectory) return "a directory";
  return "a special file";
}
