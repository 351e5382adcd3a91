/**
 * The settle step: decides when a file seen by the watcher is *ready*, i.e.
 * complete and no longer changing, and reports each version of it once.
 *
 * A file is ready when
 * - it was closed after writing or renamed in (`"closed"`), or found by the
 *   start-up scan of `once` (`"trusted"`), and its size, mtime and inode
 *   stayed the same for `settleMs`; or
 * - it was only seen being created or modified, or found by a scan
 *   (`"written"`, `"scanned"`: writers that never close it where we can see,
 *   e.g. over NFS), its size, mtime and inode stayed the same for `settleMs`,
 *   and its mtime is at least `quietMs` old (or we have watched it unchanged
 *   for `quietMs`, for mtimes in the future).
 *
 * A size change after a close means someone writes it again: the file then
 * waits for its next close (or the quiet period). An mtime-only change after
 * a close (`cp -p`, `touch`) just restarts the `settleMs` check.
 *
 * @module
 */
import { logger } from "../log/logger.ts";

/** What identifies one version of a file. */
export interface FileStat {
  readonly size: number;
  readonly mtimeMs: number;
  /** Inode number, if the platform has one (a file renamed in has a new one). */
  readonly ino: number | null;
  /** Device and ctime, recorded with the version (not compared while settling). */
  readonly dev?: number | null;
  readonly ctimeMs?: number | null;
}

/**
 * Why the settler looks at a file:
 * - `"closed"`: closed after writing, or renamed in;
 * - `"written"`: created or modified, not known to be closed;
 * - `"scanned"`: found by a scan;
 * - `"trusted"`: found by the start-up scan, and its mtime need not be old.
 */
export type Hint = "closed" | "written" | "scanned" | "trusted";

/** Timings of the settle step, in milliseconds. */
export interface SettleOptions {
  /** How long size and mtime must stay the same. */
  readonly settleMs: number;
  /** How old the mtime of a file never seen closed must be. */
  readonly quietMs: number;
  /** Subject of log lines (default: the root directory). */
  readonly subject?: string;
}

interface Sample {
  readonly stat: FileStat;
  /** `Date.now()` when the stat was taken. */
  readonly at: number;
}

interface Entry {
  /** Closed, renamed in, or trusted: needs no quiet period. */
  complete: boolean;
  sample?: Sample;
  timer?: ReturnType<typeof setTimeout>;
}

/** Whether two stats describe the same version of a file. */
export function sameStat(a: FileStat | undefined, b: FileStat | undefined): boolean {
  return a !== undefined && b !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs &&
    a.ino === b.ino;
}

/** The shortest wait between two checks, so a zero timing cannot spin. */
const MIN_WAIT_MS = 5;

/**
 * Settles the files below one root directory. `onSettled(relpath, stat)` is
 * called once per version of a file (a new size, mtime or inode), never for
 * a version it already reported.
 */
export class Settler {
  readonly #root: string;
  readonly #onSettled: (relpath: string, stat: FileStat) => void;
  readonly #options: SettleOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #reported = new Map<string, FileStat>();
  /** For each directory (relpath), how many pending or reported files lie below it. */
  readonly #dirs = new Map<string, number>();
  readonly #log;
  #closed = false;

  /** Settles files below `root` (absolute); relpaths are "/"-separated. */
  constructor(
    root: string,
    onSettled: (relpath: string, stat: FileStat) => void,
    options: SettleOptions,
  ) {
    this.#root = root;
    this.#onSettled = onSettled;
    this.#options = options;
    this.#log = logger(options.subject ?? `directory "${root}"`);
  }

  /** How many files are waiting to settle. */
  get pending(): number {
    return this.#entries.size;
  }

  /** The relpaths of every file pending or reported and not forgotten. */
  known(): string[] {
    return [...new Set([...this.#entries.keys(), ...this.#reported.keys()])];
  }

  /**
   * Tells the settler about `relpath`. `seen` is a stat the caller already
   * has (from a scan); it serves as the first sample.
   */
  note(relpath: string, hint: Hint, seen?: FileStat): void {
    if (this.#closed) return;
    let entry = this.#entries.get(relpath);
    if (entry === undefined) {
      if (hint !== "closed" && hint !== "written" && sameStat(this.#reported.get(relpath), seen)) {
        return; // a scan found a version already reported
      }
      entry = { complete: hint !== "written" && hint !== "scanned" };
      if (seen) entry.sample = { stat: seen, at: Date.now() };
      this.#setEntry(relpath, entry);
      if (seen) this.#schedule(relpath, entry, this.#options.settleMs);
      else this.#schedule(relpath, entry, 0);
      return;
    }
    if (hint !== "closed") return; // already watched; nothing new to learn
    entry.complete = true;
    entry.sample = undefined;
    this.#schedule(relpath, entry, 0);
  }

  /** Forgets that `relpath` was reported, so its next version is reported even if unchanged. */
  forget(relpath: string): void {
    this.#update(relpath, () => this.#reported.delete(relpath));
  }

  /** Drops everything known about `relpath` and, if it was a directory, below it. */
  dropTree(relpath: string): void {
    this.#drop(relpath);
    if (!this.#dirs.has(relpath)) return; // nothing known below it: keep removals O(1)
    const prefix = `${relpath}/`;
    for (const key of this.known()) if (key.startsWith(prefix)) this.#drop(key);
  }

  /** Drops what is known about `relpath` if it is no longer a regular file. */
  verify(relpath: string): void {
    if (this.#closed) return;
    try {
      if (this.#stat(relpath) === undefined) this.#drop(relpath);
    } catch (error) {
      this.#log.warn(`Settle step failed, file skipped: ${(error as Error).message}`);
    }
  }

  /** Stops every timer; nothing is reported afterwards. */
  close(): void {
    this.#closed = true;
    for (const entry of this.#entries.values()) clearTimeout(entry.timer);
    this.#entries.clear();
    this.#reported.clear();
    this.#dirs.clear();
  }

  #drop(relpath: string): void {
    clearTimeout(this.#entries.get(relpath)?.timer);
    this.#update(relpath, () => {
      this.#entries.delete(relpath);
      this.#reported.delete(relpath);
    });
  }

  #setEntry(relpath: string, entry: Entry): void {
    this.#update(relpath, () => this.#entries.set(relpath, entry));
  }

  #deleteEntry(relpath: string): void {
    this.#update(relpath, () => this.#entries.delete(relpath));
  }

  /** Runs `change` on the maps, keeping `#dirs` in step when `relpath` becomes (un)known. */
  #update(relpath: string, change: () => void): void {
    const before = this.#entries.has(relpath) || this.#reported.has(relpath);
    change();
    const after = this.#entries.has(relpath) || this.#reported.has(relpath);
    if (before === after) return;
    for (let i = relpath.lastIndexOf("/"); i > 0; i = relpath.lastIndexOf("/", i - 1)) {
      const dir = relpath.slice(0, i);
      const count = (this.#dirs.get(dir) ?? 0) + (after ? 1 : -1);
      if (count > 0) this.#dirs.set(dir, count);
      else this.#dirs.delete(dir);
    }
  }

  #schedule(relpath: string, entry: Entry, waitMs: number): void {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      try {
        this.#check(relpath, entry);
      } catch (error) {
        this.#log.warn(`Settle step failed, file skipped: ${(error as Error).message}`);
      }
    }, Math.max(0, waitMs));
  }

  // Synchronous, like the stat it takes (a metadata call that costs ~40 µs as an
  // async op, ~2 µs in place): no note can arrive while a check runs.
  #check(relpath: string, entry: Entry): void {
    let stat: FileStat | undefined;
    try {
      stat = this.#stat(relpath);
    } catch (error) {
      // Unreadable: give up on this file rather than keep `pending` up forever.
      if (this.#entries.get(relpath) === entry) this.#deleteEntry(relpath);
      throw error;
    }
    if (this.#closed || this.#entries.get(relpath) !== entry) return;
    if (stat === undefined) return this.#drop(relpath);
    const { settleMs, quietMs } = this.#options;
    const now = Date.now();
    const sample = entry.sample;
    if (entry.complete && sample && stat.size !== sample.stat.size) entry.complete = false;
    if (sample === undefined || !sameStat(sample.stat, stat)) {
      entry.sample = { stat, at: now };
      const wait = entry.complete ? settleMs : Math.min(stat.mtimeMs + quietMs - now, quietMs);
      return this.#schedule(relpath, entry, Math.max(settleMs, wait));
    }
    const stableMs = now - sample.at;
    if (stableMs < settleMs) return this.#schedule(relpath, entry, settleMs - stableMs);
    const quietLeft = Math.min(stat.mtimeMs + quietMs - now, quietMs - stableMs);
    if (!entry.complete && quietLeft > 0) {
      return this.#schedule(relpath, entry, Math.max(MIN_WAIT_MS, quietLeft));
    }
    this.#deleteEntry(relpath);
    if (sameStat(this.#reported.get(relpath), stat)) return;
    this.#update(relpath, () => this.#reported.set(relpath, stat));
    try {
      this.#onSettled(relpath, stat);
    } catch (error) {
      this.#log.error(`Handling ready file "${relpath}" failed: ${(error as Error).message}`);
    }
  }

  #stat(relpath: string): FileStat | undefined {
    try {
      const info = Deno.lstatSync(`${this.#root}/${relpath}`);
      if (!info.isFile) return undefined;
      return {
        size: info.size,
        mtimeMs: info.mtime?.getTime() ?? 0,
        ino: info.ino,
        dev: info.dev,
        ctimeMs: info.ctime?.getTime() ?? null,
      };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
        return undefined;
      }
      throw new Error(`Cannot stat "${this.#root}/${relpath}": ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}
