/**
 * The trust check for a vessel's TempDir, shared by every transport and its
 * probe. Other users of the vessel must not be able to plant links or files
 * where parts are written, or read them: TempDir is a real directory (not a
 * symlink), owned by the login user, that group and others cannot write.
 *
 * @module
 */
import { TransportError } from "./transport.ts";

/** What the check needs to know of a directory, from an lstat (links not followed). */
export interface DirectoryStat {
  readonly isDirectory: boolean;
  readonly isSymlink: boolean;
  readonly uid: number;
  /** Permission bits (`st_mode & 0o7777`). */
  readonly mode: number;
}

/** Mode for directories ContentMonster creates in TempDir, and TempDir itself. */
export const PRIVATE_DIR_MODE = 0o700;
/** Mode for files ContentMonster creates until they are published. */
export const PRIVATE_FILE_MODE = 0o600;

/**
 * Why `stat` of `path` may not hold parts, with the fix, or `undefined` when
 * it may. `loginUid` is the uid the vessel's files are written as.
 */
export function privateDirProblem(
  path: string,
  stat: DirectoryStat,
  loginUid: number,
): string | undefined {
  const quoted = JSON.stringify(path);
  if (stat.isSymlink) {
    return `${quoted} is a symbolic link; remove it (ContentMonster creates TempDir itself, ` +
      `mode 0700) or set TempDir to a real directory`;
  }
  if (!stat.isDirectory) return `${quoted} is not a directory; remove it or set another TempDir`;
  if (stat.uid !== loginUid) {
    return `${quoted} belongs to uid ${stat.uid}, not to the login user (uid ${loginUid}); ` +
      `someone else may have created it: remove it, or chown it to the login user, ` +
      `or set another TempDir`;
  }
  if ((stat.mode & 0o022) !== 0) {
    return `${quoted} is writable by group or others (mode ${
      (stat.mode & 0o7777).toString(8).padStart(4, "0")
    }); run \`chmod 700 ${path}\` on the vessel or set another TempDir`;
  }
  return undefined;
}

/** The `"unsafe"` error that refuses a vessel whose TempDir fails the check. */
export function unsafeTempDir(vessel: string, problem: string): TransportError {
  return new TransportError(
    `Cannot use TempDir on vessel "${vessel}": ${problem}`,
    "unsafe",
    { retryable: false },
  );
}
