/**
 * TempDir and part directories on an SFTP vessel: created 0700, and checked
 * (without following links) to be private to the login user before any part
 * is written in them. See `../private_dir.ts` for why.
 *
 * @module
 */
import type { Stats } from "./_ssh2.ts";
import { parentOf, TransportError } from "../transport.ts";
import { type DirectoryStat, privateDirProblem, unsafeTempDir } from "../private_dir.ts";
import { hasStatus, type RunCommand, SFTP_STATUS, type SshConnection } from "./connection.ts";
import { lstatPath, makeDirectories, makePrivateDirectory, removeDirectory } from "./sftp_ops.ts";

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
 * Makes sure `dir` is a directory private to the login user: creates it 0700
 * (with its parents when `parents`), or checks the one there. Throws an
 * `"unsafe"` TransportError naming the problem and its fix.
 */
export async function ensurePrivateDirectory(
  connection: SshConnection,
  dir: string,
  options: { vessel: string; uid: number; parents: boolean },
): Promise<void> {
  let stats = await lstatPath(connection, dir);
  if (!stats) {
    if (options.parents && !(await lstatPath(connection, parentOf(dir)))) {
      await makeDirectories(connection, parentOf(dir));
    }
    await makePrivateDirectory(connection, dir);
    // Looked at again: someone may have been faster between the lstat and the mkdir.
    stats = await lstatPath(connection, dir);
    if (!stats) throw new Error(`${JSON.stringify(dir)} vanished right after mkdir`);
  }
  const problem = privateDirProblem(dir, directoryStat(stats), options.uid);
  if (problem) throw unsafeTempDir(options.vessel, problem);
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
  await ensurePrivateDirectory(connection, dir, { ...options, parents: false });
  return false;
}

/**
 * Makes sure `tempDir` is private (as {@linkcode ensurePrivateDirectory})
 * and creates the part directory `partDir` in it, in one round trip when
 * TempDir's parent is there and the part directory is not: TempDir's mkdir
 * (which fails harmlessly when it is there), its lstat and the part
 * directory's mkdir leave together, and the server answers them in order,
 * so the lstat shows TempDir as the part directory's mkdir found it. A part
 * directory made in a TempDir that fails the check is removed before the
 * error. Returns whether the part directory is new (so holds no parts).
 */
export async function preparePartDirectory(
  connection: SshConnection,
  tempDir: string,
  partDir: string,
  options: { vessel: string; uid: Promise<number> },
): Promise<boolean> {
  await connection.sftp(); // From here on requests leave in the order they are made.
  const [, tempStats, made] = await Promise.allSettled([
    makePrivateDirectory(connection, tempDir),
    lstatPath(connection, tempDir),
    makePrivateDirectory(connection, partDir),
  ]);
  if (tempStats.status === "rejected") throw tempStats.reason;
  const madePartDir = made.status === "fulfilled" && made.value;
  if (tempStats.value) {
    const problem = privateDirProblem(tempDir, directoryStat(tempStats.value), await options.uid);
    if (problem) {
      if (madePartDir) await removeDirectory(connection, partDir).catch(() => {});
      throw unsafeTempDir(options.vessel, problem);
    }
    if (madePartDir) return true;
  } else if (made.status === "rejected" && !hasStatus(made.reason, SFTP_STATUS.NO_SUCH_FILE)) {
    throw made.reason;
  }
  // TempDir's parent is missing, or the part directory is there already: step by step.
  const checked = { vessel: options.vessel, uid: await options.uid };
  await ensurePrivateDirectory(connection, tempDir, { ...checked, parents: true });
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
