/**
 * The watcher: finds files in the source directories and reports each one
 * when it is ready (see `settle.ts`), with its path relative to the
 * directory. What is reported follows the rules in `scan.ts`.
 *
 * `Deno.watchFs` is only a hint. What Deno 2.9 gives on Linux (inotify),
 * measured here:
 * - create + write + close: `create`, `modify`, `access` (the `access` is
 *   IN_CLOSE_WRITE; an empty file gives `create`, `access`). Reads give no
 *   event; `chmod`/`utime` give `modify`.
 * - rename inside the tree: `remove [old]`, `rename [new]`, `rename [old, new]`;
 *   rename into the tree: `rename [new]`; rename out of it: `remove [old]`.
 *   So every path of a `rename` or `remove` event is checked with `lstat`.
 * - a directory renamed in gives one `rename [dir]` and nothing for its
 *   files: the directory is scanned, its files count as renamed in.
 * - `mkdir -p a/b/c` + create: `create [a]` only; the file's own events
 *   arrive only if the recursive watch on `a/b/c` was in place in time (most
 *   times, not always). So every new directory is scanned, and once more a
 *   moment later (the file may come after the first scan and before the
 *   watch); files found so are treated as never seen closed (quiet period)
 *   unless their `access` event arrives.
 * - removing the watched directory gives `remove [location]` and then
 *   nothing, even once it is created again: the watcher is then replaced.
 * - on queue overflow an event with `flag: "rescan"` arrives.
 * Hence: a full scan at start-up, on `rescan` flags, every `rescanMs`, and
 * while the watcher is broken every `retryMs` (when it also retries
 * creating the watcher).
 *
 * @module
 */
import type { DirectoryConfig } from "../config/types.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { describeError, logger } from "../log/logger.ts";
import { isIgnoredPath, scanDirectory } from "./scan.ts";
import { type FileStat, type Hint, Settler } from "./settle.ts";

/**
 * How long after a new directory appears it is scanned a second time: by
 * then the watches on the directories made with it are in place, so a file
 * the first scan missed and no event told of is found now, not at the next
 * full rescan a minute later.
 */
const NEW_DIRECTORY_RESCAN_MS = 1_000;

/** A file that is complete and no longer changing. */
export interface ReadyFile {
  /** `DirectoryConfig.name`. */
  readonly directory: string;
  /** Path relative to the directory's location, "/"-separated. */
  readonly relpath: string;
  /** Absolute path on the shore. */
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly dev?: number | null;
  readonly ino?: number | null;
  readonly ctimeMs?: number | null;
}

/** Timings of the watcher, in milliseconds. */
export interface WatcherOptions {
  /** How long size and mtime must stay the same (default 100). */
  settleMs?: number;
  /** How old the mtime of a file never seen closed must be (default 5000). */
  quietMs?: number;
  /** How often the whole tree is scanned again (default 60000). */
  rescanMs?: number;
  /** While watching fails, how often to retry and scan (default min(rescanMs, 5000)). */
  retryMs?: number;
  /** Files found by the start-up scan need only the `settleMs` check (for `once`). */
  trustExisting?: boolean;
  /**
   * Whether to watch with `Deno.watchFs` between scans (default true). `once`
   * takes the files present at its start: each file it moved into processed/
   * cost the watch's thread and this one an event to look at, for nothing.
   */
  watch?: boolean;
  /**
   * After each full scan of a directory: the files it found that cannot be
   * replicated (names that are not valid UTF-8), each also warned about.
   */
  onUnaddressable?: (directory: string, relpaths: string[]) => void;
}

/** Watches source directories and calls `onReady` for each ready file version. */
export class Watcher {
  readonly #watches: DirectoryWatch[];

  /** Watches `directories`; nothing happens before `start()`. */
  constructor(
    directories: readonly DirectoryConfig[],
    onReady: (file: ReadyFile) => void,
    options: WatcherOptions = {},
  ) {
    const rescanMs = options.rescanMs ?? 60_000;
    const timings: Timings = {
      settleMs: options.settleMs ?? 100,
      quietMs: options.quietMs ?? 5_000,
      rescanMs,
      retryMs: options.retryMs ?? Math.min(rescanMs, 5_000),
      trustExisting: options.trustExisting ?? false,
      watch: options.watch ?? true,
      onUnaddressable: options.onUnaddressable,
    };
    this.#watches = directories.map((config) => new DirectoryWatch(config, onReady, timings));
  }

  /** Starts watching; resolves once the start-up scan has queued every file found. */
  async start(): Promise<void> {
    await Promise.all(this.#watches.map((watch) => watch.start()));
  }

  /** Whether no file is waiting to settle and no scan is running. */
  idle(): boolean {
    return this.#watches.every((watch) => watch.idle());
  }

  /** How many files were seen but are not ready yet. */
  pending(): number {
    return this.#watches.reduce((sum, watch) => sum + watch.settler.pending, 0);
  }

  /** Forgets that `relpath` was reported (the engine moved it away). */
  forget(directory: string, relpath: string): void {
    this.#watches.find((watch) => watch.config.name === directory)?.settler.forget(relpath);
  }

  /** Closes every `Deno.FsWatcher` and timer and waits for work in flight. */
  async stop(): Promise<void> {
    await Promise.all(this.#watches.map((watch) => watch.stop()));
  }
}

interface Timings {
  readonly settleMs: number;
  readonly quietMs: number;
  readonly rescanMs: number;
  readonly retryMs: number;
  readonly trustExisting: boolean;
  readonly watch: boolean;
  readonly onUnaddressable?: (directory: string, relpaths: string[]) => void;
}

/** One source directory: its `Deno.FsWatcher`, scans and settler. */
class DirectoryWatch {
  readonly config: DirectoryConfig;
  readonly settler: Settler;
  readonly #timings: Timings;
  readonly #location: string;
  readonly #log;
  readonly #scans = new Set<Promise<void>>();
  #fs?: Deno.FsWatcher;
  #loop?: Promise<void>;
  #rescanTimer?: ReturnType<typeof setTimeout>;
  #retryTimer?: ReturnType<typeof setTimeout>;
  #fullScan?: Promise<void>;
  #fullScanAgain = false;
  #broken = false;
  /** Why #checkRoot closed the watcher. */
  #closeReason: unknown;
  #scanFailing = false;
  #stopped = false;
  /** Ends the waits for second scans of new directories when the watcher stops. */
  readonly #stopping = new AbortController();

  constructor(config: DirectoryConfig, onReady: (file: ReadyFile) => void, timings: Timings) {
    this.config = config;
    this.#timings = timings;
    this.#location = config.location.length > 1 ? config.location.replace(/\/+$/, "") : "/";
    const subject = `directory "${config.name}"`;
    this.#log = logger(subject);
    const base = this.#location === "/" ? "" : this.#location;
    this.settler = new Settler(this.#location, (relpath: string, stat: FileStat) => {
      this.#log.debug(`Ready: "${relpath}" (${stat.size} bytes)`);
      onReady({
        directory: config.name,
        relpath,
        path: `${base}/${relpath}`,
        size: stat.size,
        mtimeMs: stat.mtimeMs,
        dev: stat.dev,
        ino: stat.ino,
        ctimeMs: stat.ctimeMs,
      });
    }, { ...timings, subject });
  }

  async start(): Promise<void> {
    if (this.#timings.watch) this.#open();
    await this.#requestFullScan(this.#timings.trustExisting ? "trusted" : "scanned");
    this.#scheduleRescan();
  }

  idle(): boolean {
    return this.#scans.size === 0 && this.settler.pending === 0;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stopping.abort();
    clearTimeout(this.#rescanTimer);
    clearTimeout(this.#retryTimer);
    this.#close();
    await this.#loop;
    while (this.#scans.size > 0) await Promise.allSettled([...this.#scans]);
    this.settler.close();
  }

  /** Creates the `Deno.FsWatcher`; on failure, falls back to scans and retries. */
  #open(): boolean {
    try {
      const fs = Deno.watchFs(this.#location, { recursive: true });
      this.#fs = fs;
      this.#loop = this.#consume(fs);
    } catch (error) {
      this.#fail(`Cannot watch "${this.#location}"`, error);
      return false;
    }
    if (this.#broken) this.#log.info(`Watching "${this.#location}" again`);
    this.#broken = false;
    return true;
  }

  #close(): void {
    try {
      this.#fs?.close();
    } catch {
      // Already closed.
    }
    this.#fs = undefined;
  }

  #fail(what: string, error: unknown): void {
    const message = `${what}: ${describeError(error)}; scanning every ${this.#timings.retryMs} ms`;
    if (this.#broken) this.#log.debug(message);
    else this.#log.error(message);
    this.#broken = true;
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#stopped) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (this.#stopped || this.#fs) return;
      this.#open(); // on failure it schedules the next retry
      this.#requestFullScan("scanned");
    }, this.#timings.retryMs);
  }

  #scheduleRescan(): void {
    if (this.#stopped) return;
    this.#rescanTimer = setTimeout(async () => {
      await this.#requestFullScan("scanned");
      this.#scheduleRescan();
    }, this.#timings.rescanMs);
  }

  async #consume(fs: Deno.FsWatcher): Promise<void> {
    let failure: unknown;
    try {
      for await (const event of fs) {
        if (this.#stopped) break;
        await this.#handle(event);
      }
      failure = this.#closeReason ?? new Error("the event stream ended");
    } catch (error) {
      failure = error;
    }
    this.#closeReason = undefined;
    if (this.#fs === fs) this.#close();
    if (!this.#stopped) this.#fail(`Watching "${this.#location}" stopped`, failure);
  }

  async #handle(event: Deno.FsEvent): Promise<void> {
    if (event.flag === "rescan") {
      this.#requestFullScan("scanned");
      return;
    }
    for (const path of event.paths) {
      const relpath = this.#relpath(path);
      if (relpath === undefined || isIgnoredPath(relpath)) continue;
      if (relpath === "") {
        if (event.kind !== "access" && event.kind !== "modify") await this.#checkRoot();
      } else if (event.kind === "access") {
        this.settler.note(relpath, "closed");
      } else if (event.kind === "modify") {
        this.settler.note(relpath, "written");
      } else {
        this.#inspect(relpath, event.kind === "rename" ? "closed" : "written");
      }
    }
  }

  /** Looks at a path named by a create/rename/remove event. */
  #inspect(relpath: string, hint: Hint): void {
    let info: Deno.FileInfo | undefined;
    try {
      info = Deno.lstatSync(`${this.#location}/${relpath}`);
    } catch {
      info = undefined;
    }
    if (info?.isFile) this.settler.note(relpath, hint);
    else if (info?.isDirectory) {
      this.#track(this.#scan(relpath, hint === "closed" ? hint : "scanned"));
      const later = sleep(NEW_DIRECTORY_RESCAN_MS, undefined, { signal: this.#stopping.signal });
      // A stop ends the wait, and the second scan is not made.
      this.#track(later.then(() => this.#scan(relpath, "scanned"), () => {}));
    } else this.settler.dropTree(relpath);
  }

  /** The watched directory itself was removed or moved: replace the watcher. */
  async #checkRoot(): Promise<void> {
    try {
      await Deno.stat(this.#location);
    } catch (error) {
      this.#closeReason = error;
      this.#close(); // ends #consume, which reports it and schedules the retry
    }
  }

  #relpath(path: string): string | undefined {
    if (path === this.#location) return "";
    const prefix = this.#location === "/" ? "/" : `${this.#location}/`;
    return path.startsWith(prefix) ? path.slice(prefix.length) : undefined;
  }

  #track(scan: Promise<void>): Promise<void> {
    this.#scans.add(scan);
    const done = () => void this.#scans.delete(scan);
    scan.then(done, done);
    return scan;
  }

  /** Runs a full scan, or, if one is running, one more after it. */
  #requestFullScan(hint: Hint): Promise<void> {
    if (this.#fullScan) {
      this.#fullScanAgain = true;
      return this.#fullScan;
    }
    const run = async () => {
      do {
        this.#fullScanAgain = false;
        await this.#scan(undefined, hint);
        hint = "scanned";
      } while (this.#fullScanAgain && !this.#stopped);
      this.#fullScan = undefined;
    };
    this.#fullScan = this.#track(run());
    return this.#fullScan;
  }

  /** Scans `under` (or everything) and tells the settler what it found. */
  async #scan(under: string | undefined, hint: Hint): Promise<void> {
    if (this.#stopped) return;
    let files;
    const unaddressable: string[] = [];
    try {
      files = await scanDirectory(this.#location, under, unaddressable);
    } catch (error) {
      if (under !== undefined) return; // the new directory vanished again
      if (!this.#scanFailing) this.#log.error(describeError(error));
      this.#scanFailing = true;
      return;
    }
    if (under === undefined && this.#scanFailing) {
      this.#scanFailing = false;
      this.#log.info(`Scanning "${this.#location}" works again`);
    }
    const found = new Set<string>();
    for (const file of files) {
      found.add(file.relpath);
      this.settler.note(file.relpath, hint, file);
    }
    for (const relpath of unaddressable) {
      this.#log.warn(
        `cannot replicate ${
          escapeName(relpath)
        }: its name is not valid UTF-8 (shown as \\uFFFD), ` +
          `so it cannot be opened; rename it to UTF-8 (e.g. with convmv)`,
      );
    }
    if (under !== undefined) return;
    this.#timings.onUnaddressable?.(this.config.name, unaddressable);
    for (const relpath of this.settler.known()) {
      if (!found.has(relpath)) this.settler.verify(relpath);
    }
  }
}

/** A file name for a log line: quoted, control characters and U+FFFD escaped. */
export function escapeName(name: string): string {
  return JSON.stringify(name).replaceAll("\uFFFD", "\\uFFFD");
}
