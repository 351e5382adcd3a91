/**
 * The trust check for a vessel's TempDir, shared by every transport and its
 * probe. Other users of the vessel must not be able to plant links or files
 * where parts are written, or read them: TempDir is a real directory (not a
 * symlink), owned by the login user, that group and others cannot write.
 * The directories above it must be as safe (see {@linkcode ancestorProblem}):
 * else another user renames TempDir's path away after the check and puts
 * their own directory, or a link, in its place.
 *
 * @module
 */
import { parentOf, TransportError } from "./transport.ts";

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
 * Mode for the missing directories above TempDir that ContentMonster makes:
 * `mkdir -p` under umask 022, but never group-writable whatever the umask
 * (002 makes 0775), which {@linkcode ancestorProblem} would refuse.
 */
export const ANCESTOR_DIR_MODE = 0o755;

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
    const mode = modeText(stat.mode);
    return `${quoted} is writable by group or others (mode ${mode}); ` +
      `run \`chmod 700 ${path}\` on the vessel or set another TempDir`;
  }
  return undefined;
}

/**
 * Why `stat` of `path`, a directory above TempDir, lets someone other than
 * root and the login user rename or replace what lies below it, with the fix,
 * or `undefined` when it does not. OpenSSH's StrictModes judges the
 * directories above `authorized_keys` alike: each must belong to root or the
 * user and be writable by no one else; a sticky one (`/tmp`, mode 1777) is
 * fine, as others cannot rename or remove entries they do not own, and the
 * entry below it is judged next. A symbolic link is fine when root or the
 * login user owns it (`/var/run -> /run`): a link's own mode means nothing,
 * who can replace it depends on the directory it is in, judged too; where it
 * leads is for the caller to judge (see {@linkcode checkAncestors}).
 */
export function ancestorProblem(
  path: string,
  stat: DirectoryStat,
  loginUid: number,
): string | undefined {
  const quoted = JSON.stringify(path);
  const owners = `not to root or the login user (uid ${loginUid})`;
  const swap = "who may move TempDir's path away and put their own in its place";
  if (stat.uid !== 0 && stat.uid !== loginUid) {
    if (stat.isSymlink) {
      return `${quoted} above TempDir is a symbolic link belonging to uid ${stat.uid}, ${owners}, ` +
        `who may point it elsewhere; set TempDir to a path that does not go through it`;
    }
    return `${quoted} above TempDir belongs to uid ${stat.uid}, ${owners}, ${swap}: ` +
      `run \`chown root ${path}\` on the vessel or set another TempDir`;
  }
  if (stat.isSymlink) return undefined;
  if (!stat.isDirectory) return `${quoted} above TempDir is not a directory; set another TempDir`;
  if ((stat.mode & 0o022) !== 0 && (stat.mode & 0o1000) === 0) {
    return `${quoted} above TempDir is writable by group or others without the sticky bit ` +
      `(mode ${modeText(stat.mode)}), ${swap}: run \`chmod go-w ${path}\` (or \`chmod +t\`, ` +
      `as on /tmp) on the vessel or set another TempDir`;
  }
  return undefined;
}

/** Every directory above absolute `path`, from `/` down to its parent. */
export function ancestorsOf(path: string): string[] {
  const ancestors: string[] = [];
  for (let dir = path; dir !== "/";) {
    dir = parentOf(dir);
    ancestors.unshift(dir);
  }
  return ancestors;
}

/** How {@linkcode checkAncestors} looks at the filesystem TempDir is on. */
export interface AncestorLookup {
  /** An lstat (links not followed); `undefined` when nothing is there. */
  lstat(path: string): Promise<DirectoryStat | undefined>;
  /** `path` with every symbolic link in it resolved. */
  realPath(path: string): Promise<string>;
}

/**
 * Judges every directory above `tempDir` with {@linkcode ancestorProblem},
 * and throws the `"unsafe"` error for the topmost that fails. All the lstats
 * are made before this first waits, so on SFTP they leave together, ahead of
 * the requests made after the call, and cost one round trip. When a link is
 * among them, the directories above where TempDir really lies are judged too
 * (a second look: links above TempDir are rare). Resolves to whether all
 * were there: a missing one is not judged, nor where links lead past it, so
 * the caller checks again once it has made them (below a sticky directory
 * another user may be first to make them).
 */
export async function checkAncestors(
  tempDir: string,
  options: { vessel: string; uid: number | Promise<number>; lookup: AncestorLookup },
): Promise<boolean> {
  const { vessel, lookup } = options;
  const paths = ancestorsOf(tempDir);
  const stats = await Promise.all(paths.map((path) => lookup.lstat(path)));
  const uid = await options.uid;
  const judge = (paths: string[], stats: (DirectoryStat | undefined)[]) => {
    for (const [i, path] of paths.entries()) {
      const problem = stats[i] && ancestorProblem(path, stats[i], uid);
      if (problem) throw unsafeTempDir(vessel, problem);
    }
  };
  judge(paths, stats);
  if (stats.includes(undefined)) return false;
  if (stats.some((stat) => stat?.isSymlink)) {
    const realParent = await lookup.realPath(parentOf(tempDir));
    const real = [...ancestorsOf(realParent), realParent];
    const realStats = await Promise.all(real.map((path) => lookup.lstat(path)));
    judge(real, realStats);
    // A link or a gap where the real path was just seen moved meanwhile: look again later.
    if (realStats.some((stat) => !stat || stat.isSymlink)) return false;
  }
  return true;
}

/**
 * Readies the way to `tempDir` alike for every transport: judges the
 * directories above it (unless `passed`: the caller just found them all there
 * and safe), makes TempDir's parent and its missing ancestors with
 * `makeParents` (mode {@linkcode ANCESTOR_DIR_MODE}) when neither TempDir nor
 * its parent is there, and judges again once something was missing: below a
 * sticky directory (/tmp) another user may have been first to make them.
 * Resolves to TempDir's lstat, `undefined` when it is not there yet.
 */
export async function readyAncestors(
  tempDir: string,
  options: {
    vessel: string;
    uid: number;
    lookup: AncestorLookup;
    passed?: boolean;
    makeParents(dir: string): Promise<void>;
  },
): Promise<DirectoryStat | undefined> {
  const check = () => checkAncestors(tempDir, options);
  let complete = options.passed || await check();
  const stat = await options.lookup.lstat(tempDir);
  if (!stat && !(await options.lookup.lstat(parentOf(tempDir)))) {
    await options.makeParents(parentOf(tempDir));
    complete = false;
  }
  if (!complete && !(await check())) {
    throw new Error(`a directory above ${JSON.stringify(tempDir)} vanished as it was checked`);
  }
  return stat;
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** Throws the `"unsafe"` error when `stat` of `dir` may not hold parts (see {@linkcode privateDirProblem}). */
export function mustBePrivate(
  dir: string,
  stat: DirectoryStat,
  options: { vessel: string; uid: number },
): void {
  const problem = privateDirProblem(dir, stat, options.uid);
  if (problem) throw unsafeTempDir(options.vessel, problem);
}

/**
 * Judges TempDir and the directories above it as {@linkcode readyAncestors}
 * and the check of TempDir do, but creates nothing: for a cleanup, which a
 * missing TempDir spares. The lstats are all made before the first wait (one
 * round trip over SFTP). Throws the `"unsafe"` error; resolves to whether
 * TempDir is there, and everything above it was, to list. `shownAs` names
 * TempDir in the message, when `tempDir` is where this machine finds it.
 */
export async function judgeTempDir(
  tempDir: string,
  options: {
    vessel: string;
    uid: number | Promise<number>;
    lookup: AncestorLookup;
    shownAs?: string;
  },
): Promise<boolean> {
  const [complete, stat] = await Promise.all([
    checkAncestors(tempDir, options),
    options.lookup.lstat(tempDir),
  ]);
  if (!stat) return false;
  mustBePrivate(options.shownAs ?? tempDir, stat, { ...options, uid: await options.uid });
  // Something above it was missing or moved as it was looked at: list it another time.
  return complete;
}

/** The `"unsafe"` error that refuses a vessel whose TempDir fails the check. */
export function unsafeTempDir(vessel: string, problem: string): TransportError {
  return new TransportError(
    `Cannot use TempDir on vessel "${vessel}": ${problem}`,
    "unsafe",
    { retryable: false },
  );
}
