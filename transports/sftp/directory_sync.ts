/**
 * Flushes destination directories after renames, sharing each fsync
 * between the files renamed into one directory over one connection at
 * about the same time. An SFTP server handles one session's requests in
 * order, so an fsync of the directory covers every rename sent before it on
 * the same connection.
 *
 * The directory's handle stays open while files keep arriving (closed
 * {@linkcode KEEP_MS} after its last flush), so a flush is one fsync that
 * leaves with its rename: one round trip, where an open, fsync and close
 * per flush took two (on a 600 ms link, 0.6 s more at the end of every
 * batch). On a short link one fsync per directory and connection is in
 * flight at a time; renames made meanwhile share the next one, so a burst of
 * files costs the vessel one journal commit per round trip, not one per
 * file. On a long link, where a round trip costs more than a journal
 * commit, the renames made in one turn share an fsync sent in the next,
 * behind the one in flight: the last files of a burst then wait one round
 * trip less (see {@linkcode SyncOptions.pipelined}).
 *
 * @module
 */

/** The three requests of a directory flush, on one connection. */
export interface DirectoryFlush<C, H> {
  open(connection: C, dir: string): Promise<H>;
  fsync(connection: C, handle: H): Promise<void>;
  close(connection: C, handle: H): Promise<void>;
}

/** How long a directory's handle stays open after its last flush, for the next files. */
export const KEEP_MS = 10_000;
/**
 * Directories kept open per connection beyond those being flushed: files
 * spread over many directories must not run the SFTP server out of file
 * descriptors (OpenSSH's sftp-server has as many as its process may open).
 */
export const MAX_KEPT = 16;

/** One directory kept open on one connection. */
interface Kept<H> {
  readonly handle: Promise<H>;
  /** The handle once open: an fsync then leaves at once, not a turn later behind other requests. */
  opened?: H;
  /** The last flush, until its fsync is answered. */
  flushing?: Promise<void>;
  /** Whether that fsync still waits for the handle to open: renames made meanwhile join it. */
  joinable?: boolean;
  /** The fsync that renames made while one is in flight share, sent once that one is answered. */
  next?: Promise<void>;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * How long idle handles stay open, and how many (see {@linkcode KEEP_MS} and
 * {@linkcode MAX_KEPT}), and when fsyncs need not wait for each other.
 */
export interface SyncOptions {
  readonly keepMs?: number;
  readonly maxKept?: number;
  /**
   * Whether an fsync is sent while another of the same directory is in
   * flight (asked as each is needed): true on a long link, where waiting
   * for the answer costs a round trip and the vessel's journal commit far
   * less.
   */
  readonly pipelined?: () => boolean;
}

/** Per connection and directory, the open handle and the fsync renames still join. */
export class DirectorySyncs<C extends object, H> {
  readonly #flush: DirectoryFlush<C, H>;
  readonly #kept = new WeakMap<C, Map<string, Kept<H>>>();
  readonly #keepMs: number;
  readonly #maxKept: number;
  readonly #pipelined: () => boolean;

  constructor(flush: DirectoryFlush<C, H>, options: SyncOptions = {}) {
    this.#flush = flush;
    this.#keepMs = options.keepMs ?? KEEP_MS;
    this.#maxKept = options.maxKept ?? MAX_KEPT;
    this.#pipelined = options.pipelined ?? (() => false);
  }

  /**
   * Opens `dir` on `connection` now, unless it is open there: the fsync of
   * the next {@linkcode sync} then leaves with its rename. A handle opened
   * before the rename covers it, since an fsync flushes the directory as it
   * is when the server runs it.
   */
  openAhead(connection: C, dir: string): void {
    const kept = this.#keep(connection, dir);
    if (!busy(kept)) this.#closeWhenIdle(connection, dir, kept);
  }

  /**
   * Call once the request renaming a file into `dir` has been sent on
   * `connection` (or in the same turn, before any reply can be handled):
   * resolves once an fsync of `dir` sent after that rename on `connection`
   * succeeded.
   */
  sync(connection: C, dir: string): Promise<void> {
    const kept = this.#keep(connection, dir);
    clearTimeout(kept.timer);
    if (kept.flushing && kept.joinable) return kept.flushing;
    if (kept.next) return kept.next;
    if (kept.flushing) {
      // On a long link it leaves next turn, shared by this turn's renames; else once answered.
      const ready = this.#pipelined() ? nextTurn() : kept.flushing.catch(() => {});
      const next = ready.then(() => {
        kept.next = undefined;
        // The entry of a failed fsync is gone: this one opens the directory again.
        return this.#send(connection, dir, this.#keep(connection, dir));
      });
      kept.next = next;
      return next;
    }
    return this.#send(connection, dir, kept);
  }

  /** Sends an fsync of `kept` once its handle is open; the syncs until then join it. */
  #send(connection: C, dir: string, kept: Kept<H>): Promise<void> {
    clearTimeout(kept.timer);
    const flushed = kept.opened !== undefined
      ? this.#flush.fsync(connection, kept.opened)
      : kept.handle.then((handle) => {
        kept.joinable = false;
        return this.#flush.fsync(connection, handle);
      });
    kept.flushing = flushed;
    // Renames sent from now on leave after an fsync already sent: they cannot join it.
    kept.joinable = kept.opened === undefined;
    flushed.then(
      () => {
        if (kept.flushing !== flushed) return;
        kept.flushing = undefined;
        if (!kept.next) this.#closeWhenIdle(connection, dir, kept);
      },
      () => {
        if (kept.flushing === flushed) kept.flushing = undefined;
        this.#close(connection, dir, kept);
      },
    );
    return flushed;
  }

  /** The directory's entry on `connection`, opened if it has none. */
  #keep(connection: C, dir: string): Kept<H> {
    let byDir = this.#kept.get(connection);
    if (!byDir) this.#kept.set(connection, byDir = new Map());
    let kept = byDir.get(dir);
    if (!kept) {
      kept = { handle: this.#flush.open(connection, dir) };
      const opened = kept;
      byDir.set(dir, opened);
      // A failed open is not kept: the next sync opens again.
      opened.handle.then(
        (handle) => opened.opened = handle,
        () => this.#forget(connection, dir, opened),
      );
    }
    return kept;
  }

  #closeWhenIdle(connection: C, dir: string, kept: Kept<H>): void {
    clearTimeout(kept.timer);
    if ((this.#kept.get(connection)?.size ?? 0) > this.#maxKept) {
      return this.#close(connection, dir, kept);
    }
    kept.timer = setTimeout(() => {
      if (!busy(kept)) this.#close(connection, dir, kept);
    }, this.#keepMs);
    Deno.unrefTimer(Number(kept.timer)); // Nothing should wait for it to exit.
  }

  /** Forgets the entry and closes its handle; nothing waits for the answer. */
  #close(connection: C, dir: string, kept: Kept<H>): void {
    this.#forget(connection, dir, kept);
    kept.handle.then((handle) => this.#flush.close(connection, handle)).catch(() => {});
  }

  #forget(connection: C, dir: string, kept: Kept<H>): void {
    clearTimeout(kept.timer);
    const byDir = this.#kept.get(connection);
    if (byDir?.get(dir) === kept) byDir.delete(dir);
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Whether a flush of `kept` is under way or waiting: its handle is not idle. */
function busy(kept: Kept<unknown>): boolean {
  return kept.flushing !== undefined || kept.next !== undefined;
}
