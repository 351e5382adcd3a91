/**
 * The private directory a process keeps for one vessel's `ssh` runs (their
 * control sockets, the askpass helper, a login's secrets), and the removal of
 * those that processes killed with -9 left behind, since one may still hold a
 * secret.
 *
 * A process holds a lock on a file in each of its directories for as long as
 * it runs: that, not its PID, tells a directory in use from a leftover. The
 * PID was looked up under /proc, which Deno lets only `--allow-all` read (not
 * the daemon's permissions): every process seemed dead, and `check` removed
 * the control sockets of the daemon running beside it.
 *
 * @module
 */

const DIR_PREFIX = "contentmonster-ssh-";
/** The file whose lock says the directory's process runs. */
const OWNER_FILE = "owner.lock";
/**
 * How old a directory must be before it may be removed: a young one may
 * belong to a process that made it and has not locked its file yet.
 */
const STALE_AFTER_MS = 10 * 60_000;

/**
 * Leftovers of dead processes are cleared once per process, beside the first
 * login rather than before it: none can be in its way (each directory's name
 * holds its process's PID and a random part), and reading a /tmp of 730
 * entries held that login back 21-28 ms.
 */
let staleRemovalStarted = false;

/** A 0700 directory of this process for one vessel's `ssh` runs. */
export class PrivateSshDirectory {
  readonly path: string;
  #owner?: Deno.FsFile;

  private constructor(path: string) {
    this.path = path;
  }

  /** Makes a new directory, and starts clearing what dead processes left (once per process). */
  static async create(tmp = temporaryDirectory()): Promise<PrivateSshDirectory> {
    if (!staleRemovalStarted) {
      staleRemovalStarted = true;
      void removeStaleDirectories(tmp);
    }
    // 0700 whatever the umask; ensure() checks that too.
    const path = await Deno.makeTempDir({ dir: tmp, prefix: `${DIR_PREFIX}${Deno.pid}-` });
    const directory = new PrivateSshDirectory(path);
    await directory.ensure();
    return directory;
  }

  /**
   * Makes the directory again, and locks its owner file again, if something
   * emptied the temp directory meanwhile, then checks that it is a directory
   * of this user that nobody else can enter: in a shared /tmp, a cleaner may
   * remove it while the daemon runs, and another user make one of the same
   * name for ssh to run that user's helper with our secrets.
   */
  async ensure(): Promise<void> {
    try {
      await Deno.mkdir(this.path, { mode: 0o700 });
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    const info = await Deno.lstat(this.path);
    if (info.isSymlink || !info.isDirectory || info.uid !== Deno.uid() || (info.mode! & 0o077)) {
      throw new Error(
        `The private directory ${JSON.stringify(this.path)} is not a directory of this user ` +
          `that only it can enter (someone else made it after it was removed); nothing is ` +
          `written there`,
      );
    }
    const ownerPath = `${this.path}/${OWNER_FILE}`;
    if (this.#owner && await isFile(ownerPath)) return;
    this.#owner?.close();
    this.#owner = undefined;
    const owner = await Deno.open(ownerPath, { write: true, create: true, mode: 0o600 });
    try {
      await owner.lock(true);
    } catch (error) {
      owner.close();
      throw error;
    }
    this.#owner = owner;
  }

  /** Removes the directory and lets go of its lock. */
  async dispose(): Promise<void> {
    await Deno.remove(this.path, { recursive: true }).catch(() => {});
    this.#owner?.close();
    this.#owner = undefined;
  }
}

/** Where `ssh`'s directories go: `$TMPDIR`, as Deno's own temp directories. */
function temporaryDirectory(): string {
  return Deno.env.get("TMPDIR") || "/tmp";
}

/**
 * Removes this user's directories of other processes that are old and whose
 * owner file nobody holds (a directory with none predates the lock, or was
 * emptied: its age decides).
 */
export async function removeStaleDirectories(tmp = temporaryDirectory()): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(tmp));
  } catch {
    return;
  }
  const pattern = new RegExp(`^${DIR_PREFIX}(\\d+)-`);
  for (const entry of entries) {
    const pid = pattern.exec(entry.name)?.[1];
    if (!entry.isDirectory || pid === undefined || Number(pid) === Deno.pid) continue;
    const path = `${tmp}/${entry.name}`;
    try {
      const info = await Deno.lstat(path);
      // Only this user's, closed to others: nobody else can have planted its owner file.
      if (!info.isDirectory || info.uid !== Deno.uid() || (info.mode! & 0o077)) continue;
      if (await ownerRuns(path)) continue;
      if (Date.now() - (info.mtime?.getTime() ?? 0) < STALE_AFTER_MS) {
        // Too young to go whole, but a login's secrets are written only once the owner file
        // is locked: these are a dead process's. A daemon killed mid-login and restarted by
        // systemd 5 s later kept them on disk for as long as the new one ran.
        await removeSecretFiles(path);
        continue;
      }
      await Deno.remove(path, { recursive: true });
    } catch {
      // Gone already, or not ours.
    }
  }
}

/** Removes the copies of secrets (`login<N>.password`, `.passphrase`) in `dir`. */
async function removeSecretFiles(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    if (/^login\d+\.(password|passphrase)$/.test(entry.name)) {
      await Deno.remove(`${dir}/${entry.name}`).catch(() => {});
    }
  }
}

/** Whether a process holds the lock of `dir`'s owner file. */
async function ownerRuns(dir: string): Promise<boolean> {
  const ownerPath = `${dir}/${OWNER_FILE}`;
  if (!await isFile(ownerPath)) return false;
  const owner = await Deno.open(ownerPath, { read: true });
  try {
    return !await owner.tryLock(true);
  } finally {
    owner.close();
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isFile;
  } catch {
    return false;
  }
}
