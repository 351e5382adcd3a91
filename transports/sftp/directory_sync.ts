/**
 * Shares the fsync of a destination directory between the files renamed
 * into it over one connection at about the same time. An SFTP server
 * handles one session's requests in order, so an fsync of the directory
 * covers every rename sent before it on the same connection: files
 * published together need one open, fsync and close of their directory
 * instead of one each (and one journal commit on the vessel). The first
 * publish's open goes out with its rename, and the close with the fsync, so
 * a lone file takes two round trips; one if its directory was opened ahead
 * (while the vessel assembled and hashed the file).
 *
 * @module
 */

/** The three requests of a directory flush, on one connection. */
export interface DirectoryFlush<C, H> {
  open(connection: C, dir: string): Promise<H>;
  fsync(connection: C, handle: H): Promise<void>;
  close(connection: C, handle: H): Promise<void>;
}

/** How long a directory opened ahead stays open for a publish that does not come. */
const AHEAD_MS = 60_000;

/** A directory opened ahead of its publish. */
interface Ahead<H> {
  readonly handle: Promise<H>;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** Per connection and directory, the fsync that renames sent from now on still join. */
export class DirectorySyncs<C extends object, H> {
  readonly #flush: DirectoryFlush<C, H>;
  readonly #joinable = new WeakMap<C, Map<string, Promise<void>>>();
  readonly #ahead = new WeakMap<C, Map<string, Ahead<H>>>();

  constructor(flush: DirectoryFlush<C, H>) {
    this.#flush = flush;
  }

  /**
   * Opens `dir` on `connection` now, for the next {@linkcode sync} of it
   * there, whose fsync then leaves with the rename: a handle opened before
   * the rename covers it, since an fsync flushes the directory as it is when
   * the server runs it. Closed if no sync takes it within a minute.
   */
  openAhead(connection: C, dir: string): void {
    let byDir = this.#ahead.get(connection);
    if (!byDir) this.#ahead.set(connection, byDir = new Map());
    if (byDir.has(dir)) return;
    const handle = this.#flush.open(connection, dir);
    const timer = setTimeout(() => {
      byDir.delete(dir);
      handle.then((opened) => this.#flush.close(connection, opened)).catch(() => {});
    }, AHEAD_MS);
    Deno.unrefTimer(Number(timer)); // Nothing should wait for it to exit.
    byDir.set(dir, { handle, timer });
    handle.catch(() => {}); // A failed open ahead: the sync that takes it opens again.
  }

  /**
   * Call once the request renaming a file into `dir` has been sent on
   * `connection` (or in the same turn, before any reply can be handled):
   * resolves once an fsync of `dir` sent after that rename on `connection`
   * succeeded.
   */
  sync(connection: C, dir: string): Promise<void> {
    let byDir = this.#joinable.get(connection);
    if (!byDir) this.#joinable.set(connection, byDir = new Map());
    const joinable = byDir.get(dir);
    if (joinable) return joinable;
    const flushed = this.#flushNow(connection, dir, byDir);
    byDir.set(dir, flushed);
    return flushed;
  }

  async #flushNow(connection: C, dir: string, byDir: Map<string, Promise<void>>): Promise<void> {
    let handle: H;
    try {
      handle = await (this.#takeAhead(connection, dir) ?? this.#flush.open(connection, dir));
    } finally {
      byDir.delete(dir);
    }
    // No await since the entry went: every rename that joined was sent before this fsync.
    const synced = this.#flush.fsync(connection, handle);
    // The close leaves with the fsync (the server handles them in order) and nothing waits for
    // its answer: a round trip less per publish.
    this.#flush.close(connection, handle).catch(() => {});
    await synced;
  }

  /** The handle opened ahead for `dir` on `connection`, if any; opened again if that failed. */
  #takeAhead(connection: C, dir: string): Promise<H> | undefined {
    const byDir = this.#ahead.get(connection);
    const ahead = byDir?.get(dir);
    if (!ahead) return undefined;
    byDir!.delete(dir);
    clearTimeout(ahead.timer);
    return ahead.handle.catch(() => this.#flush.open(connection, dir));
  }
}
