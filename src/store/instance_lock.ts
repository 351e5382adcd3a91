/**
 * One replicating process per state database. Two would run the same
 * deliveries under the same keys on the vessels, and one could publish the
 * other's half-written temp file as verified; so `run` and `once` hold an
 * exclusive advisory lock on `<database>.lock` for their whole life. The
 * kernel drops the lock when the process dies (even by `kill -9`), so a stale
 * lock file never blocks a restart. `status` and `check` take no lock.
 *
 * @module
 */

/** Thrown when another process holds the lock of a database. */
export class DatabaseLockedError extends Error {
  /** The PID recorded by the holder, if it could be read. */
  readonly holderPid: number | undefined;

  constructor(database: string, holderPid: number | undefined) {
    const holder = holderPid === undefined ? "another process" : `process ${holderPid}`;
    super(
      `Cannot use state database "${database}": ${holder} is already running ContentMonster ` +
        `on it (only one run or once per database; stop it first, or give this one its own ` +
        `Database)`,
    );
    this.name = "DatabaseLockedError";
    this.holderPid = holderPid;
  }
}

/** The lock file that guards `database`. */
export function lockPathFor(database: string): string {
  return `${database}.lock`;
}

/** An exclusive lock on one state database, held until {@linkcode release}. */
export class InstanceLock {
  readonly #file: Deno.FsFile;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /**
   * Takes the lock of `database` at once, or throws {@linkcode DatabaseLockedError}
   * naming the holder's PID. Never waits.
   */
  static async acquire(database: string): Promise<InstanceLock> {
    const path = lockPathFor(database);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    } catch (error) {
      throw new Error(`Cannot open the lock file "${path}" of database "${database}"`, {
        cause: error,
      });
    }
    let locked: boolean;
    try {
      locked = await file.tryLock(true);
    } catch (error) {
      file.close();
      throw new Error(`Cannot lock "${path}" for database "${database}"`, { cause: error });
    }
    if (!locked) {
      const holder = await readPid(file);
      file.close();
      throw new DatabaseLockedError(database, holder);
    }
    // The PID is for the message a second process shows; the lock itself is the flock.
    // Fixed width, written in place: a reader never sees the file emptied.
    await file.write(new TextEncoder().encode(`${Deno.pid}`.padEnd(19) + "\n"));
    await file.truncate(20);
    return new InstanceLock(file);
  }

  /** Lets another process take the database. Safe to call twice. */
  release(): void {
    try {
      this.#file.close(); // Closing the last descriptor drops the lock.
    } catch {
      // already closed
    }
  }
}

async function readPid(file: Deno.FsFile): Promise<number | undefined> {
  try {
    const buffer = new Uint8Array(32);
    await file.seek(0, Deno.SeekMode.Start);
    const read = await file.read(buffer) ?? 0;
    const pid = Number(new TextDecoder().decode(buffer.subarray(0, read)).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
