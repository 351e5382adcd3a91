/**
 * Makes the state database's commits durable off the daemon's only thread.
 *
 * With `synchronous = FULL`, SQLite flushes the WAL inside each COMMIT, and
 * the thread that runs every transfer waits for the disk (~1.5 ms a commit
 * here: a quarter of a second for 1000 small files). With `synchronous =
 * NORMAL`, a commit only writes the WAL; this flushes that file on Deno's
 * blocking pool instead, and a commit that an irreversible step waits for
 * (a rename on a vessel, a move into `processed/`) counts as done only once a
 * flush that began after it has ended. Commits that come while a flush runs
 * share the next one.
 *
 * @module
 */

/** Flushes one file's data to disk, one flush at a time, the waiting callers sharing the next. */
export class WalSync {
  readonly #path: string;
  #file: Deno.FsFile | undefined;
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  /** `path` is the WAL (`<database>-wal`); it is opened at the first flush. */
  constructor(path: string) {
    this.#path = path;
  }

  /** Resolves once everything written to the file before this call is on disk. */
  sync(): Promise<void> {
    // Opened here, not in the flush: the database's close may delete the WAL while one runs.
    const file = this.#file ??= Deno.openSync(this.#path, { read: true });
    // A flush already under way may have begun before the caller's write: wait for the next.
    if (this.#running) {
      this.#next ??= this.#running.then(() => this.#start(file), () => this.#start(file));
      return this.#next;
    }
    return this.#start(file);
  }

  #start(file: Deno.FsFile): Promise<void> {
    this.#next = undefined;
    const flush = file.syncData();
    this.#running = flush;
    const done = () => {
      if (this.#running === flush) this.#running = undefined;
    };
    flush.then(done, done);
    return flush;
  }

  /** Closes the file once the flushes asked for have ended. */
  close(): void {
    const file = this.#file;
    this.#file = undefined;
    if (!file) return;
    const last = this.#next ?? this.#running ?? Promise.resolve();
    last.finally(() => file.close()).catch(() => {});
  }
}
