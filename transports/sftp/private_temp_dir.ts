/**
 * TempDir and part directories on an SFTP vessel: created 0700, and checked
 * (without following links) to be private to the login user, below
 * directories no one else can change, before any part is written in them.
 * See `../private_dir.ts` for why.
 *
 * @module
 */
import type { Stats } from "./_ssh2.ts";
import { TransportError } from "../transport.ts";
import {
  ANCESTOR_DIR_MODE,
  type AncestorLookup,
  checkAncestors,
  type DirectoryStat,
  judgeTempDir,
  mustBePrivate,
  privateDirProblem,
  readyAncestors,
  unsafeTempDir,
} from "../private_dir.ts";
import { hasStatus, type RunCommand, SFTP_STATUS, type SshConnection } from "./connection.ts";
import {
  lstatPath,
  makeDirectories,
  makePrivateDirectory,
  realPath,
  removeDirectory,
} from "./sftp_ops.ts";

/** The uid the login user's files get on the vessel (`id -u`). */
export async function loginUid(run: RunCommand, deadlineMs: number): Promise<number> {
  const result = await run("id -u", deadlineMs);
  const uid = Number(result.stdout.trim());
  if (result.code === undefined) {
    // No exit status: the channel or connection went away, which a retry may mend.
    throw new TransportError(
      `\`id -u\` ended without an exit status${result.signal ? ` (${result.signal})` : ""}`,
      "connection",
    );
  }
  if (result.code !== 0 || !/^\d+$/.test(result.stdout.trim())) {
    throw new TransportError(
      `cannot learn the login user's uid with \`id -u\` (exit ${result.code}: ` +
        `${result.stderr.trim().slice(0, 200)})`,
      "unsupported",
    );
  }
  return uid;
}

/**
 * How {@linkcode checkAncestors} looks at the vessel over `connection`: the
 * lstats of one check leave together, so after `connection.sftp()` they go
 * ahead of the requests made next.
 */
function vesselLookup(connection: SshConnection): AncestorLookup {
  return {
    lstat: async (path) => {
      const stats = await lstatPath(connection, path);
      return stats && directoryStat(stats);
    },
    realPath: (path) => realPath(connection, path),
  };
}

/**
 * Makes sure TempDir and the directories above it are safe (see
 * `readyAncestors` in `../private_dir.ts`; `ancestorsPassed`: the caller just
 * found those above all there and safe), creating TempDir 0700 when missing.
 * Throws an `"unsafe"` TransportError naming the problem and its fix.
 */
export async function ensureTempDir(
  connection: SshConnection,
  tempDir: string,
  options: { vessel: string; uid: number; ancestorsPassed?: boolean },
): Promise<void> {
  const stat = await readyAncestors(tempDir, {
    ...options,
    passed: options.ancestorsPassed,
    lookup: vesselLookup(connection),
    makeParents: (dir) => makeDirectories(connection, dir, ANCESTOR_DIR_MODE),
  });
  mustBePrivate(tempDir, stat ?? await makeAndLook(connection, tempDir), options);
}

/** {@linkcode judgeTempDir} on the vessel over `connection`, for a cleanup. */
export async function checkTempDir(
  connection: SshConnection,
  tempDir: string,
  options: { vessel: string; uid: Promise<number> },
): Promise<boolean> {
  await connection.sftp(); // From here on requests leave in the order they are made.
  return await judgeTempDir(tempDir, { ...options, lookup: vesselLookup(connection) });
}

/**
 * Makes sure `dir`, in a TempDir already checked, is a directory private to
 * the login user: creates it 0700, or checks the one there. Throws an
 * `"unsafe"` TransportError naming the problem and its fix.
 */
export async function ensurePrivateDirectory(
  connection: SshConnection,
  dir: string,
  options: { vessel: string; uid: number },
): Promise<void> {
  const stats = await lstatPath(connection, dir);
  mustBePrivate(dir, stats ? directoryStat(stats) : await makeAndLook(connection, dir), options);
}

/** Creates `dir` 0700 and lstats it. */
async function makeAndLook(connection: SshConnection, dir: string): Promise<DirectoryStat> {
  await makePrivateDirectory(connection, dir);
  // Looked at again: someone may have been faster between the lstat and the mkdir.
  const stats = await lstatPath(connection, dir);
  if (!stats) throw new Error(`${JSON.stringify(dir)} vanished right after mkdir`);
  return directoryStat(stats);
}

/**
 * Creates the part directory `dir` (0700) inside a TempDir already checked:
 * one round trip when it is new; one there already is checked like TempDir.
 * Returns whether it is new (so holds no parts).
 */
export async function ensurePartDirectory(
  connection: SshConnection,
  dir: string,
  options: { vessel: string; uid: number },
): Promise<boolean> {
  if (await makePrivateDirectory(connection, dir)) return true;
  await ensurePrivateDirectory(connection, dir, options);
  return false;
}

/**
 * Makes sure `tempDir` is private (as {@linkcode ensureTempDir}) and creates
 * the part directory `partDir` in it, in one round trip when TempDir's parent
 * is there and the part directory is not: TempDir's mkdir (which fails
 * harmlessly when it is there), its lstat and the part directory's mkdir
 * leave together, and the server answers them in order, so the lstat shows
 * TempDir as the part directory's mkdir found it. On a connection not in
 * `ancestorsChecked` yet, the lstats of the directories above TempDir go
 * first in that round trip, and it joins the set once they pass: only root
 * or the login user can change them, so once per connection is enough. A
 * directory made where the check fails is removed before the error. Returns
 * whether the part directory is new (so holds no parts).
 */
export async function preparePartDirectory(
  connection: SshConnection,
  tempDir: string,
  partDir: string,
  options: { vessel: string; uid: Promise<number>; ancestorsChecked: WeakSet<SshConnection> },
): Promise<boolean> {
  await connection.sftp(); // From here on requests leave in the order they are made.
  const { vessel } = options;
  const [ancestors, tempMade, tempStats, made] = await Promise.allSettled([
    options.ancestorsChecked.has(connection) ||
    checkAncestors(tempDir, { vessel, uid: options.uid, lookup: vesselLookup(connection) }),
    makePrivateDirectory(connection, tempDir),
    lstatPath(connection, tempDir),
    makePrivateDirectory(connection, partDir),
  ]);
  const madePartDir = made.status === "fulfilled" && made.value;
  const removeMade = async (tempDirToo: boolean) => {
    if (madePartDir) await removeDirectory(connection, partDir).catch(() => {});
    if (tempDirToo && tempMade.status === "fulfilled" && tempMade.value) {
      await removeDirectory(connection, tempDir).catch(() => {});
    }
  };
  if (ancestors.status === "rejected") {
    await removeMade(true);
    throw ancestors.reason;
  }
  if (tempStats.status === "rejected") throw tempStats.reason;
  if (tempStats.value) {
    const problem = privateDirProblem(tempDir, directoryStat(tempStats.value), await options.uid);
    if (problem) {
      await removeMade(false);
      throw unsafeTempDir(vessel, problem);
    }
    if (madePartDir && ancestors.value) {
      options.ancestorsChecked.add(connection);
      return true;
    }
  } else if (made.status === "rejected" && !hasStatus(made.reason, SFTP_STATUS.NO_SUCH_FILE)) {
    throw made.reason;
  }
  // TempDir's parent is missing, or the part directory is there already: step by step.
  const checked = { vessel, uid: await options.uid };
  await ensureTempDir(connection, tempDir, { ...checked, ancestorsPassed: ancestors.value });
  options.ancestorsChecked.add(connection);
  return await ensurePartDirectory(connection, partDir, checked);
}

function directoryStat(stats: Stats): DirectoryStat {
  return {
    isDirectory: stats.isDirectory(),
    isSymlink: stats.isSymbolicLink(),
    uid: stats.uid,
    mode: stats.mode & 0o7777,
  };
}
