/**
 * The state store: the only module that speaks SQL. The queue is a query on
 * it, so a restart (even after `kill -9`) resumes from here.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { CommitGroup } from "./commit_group.ts";
import { InstanceLock } from "./instance_lock.ts";
import { MIGRATIONS } from "./migrations.ts";
import { WalSync } from "./wal_sync.ts";

/**
 * What tells two versions of a file apart besides size and mtime; `null`
 * when not known (files queued before it was recorded).
 */
export interface FileIdentity {
  readonly dev?: number | null;
  readonly ino?: number | null;
  readonly ctimeMs?: number | null;
}

/** A file the shore is replicating. */
export interface FileRecord extends FileIdentity {
  readonly id: number;
  readonly directory: string;
  readonly relpath: string;
  readonly size: number;
  readonly mtimeMs: number;
  /** Bumped each time the source changes while queued. */
  readonly version: number;
  readonly sha256: string | null;
}

/** Where one delivery stands. */
export type DeliveryState = "pending" | "publishing" | "done" | "failed";

/** One file to one vessel, with its file. */
export interface DeliveryRecord {
  readonly id: number;
  readonly vessel: string;
  readonly state: DeliveryState;
  /** The file version the parts on the vessel belong to. */
  readonly partsVersion: number | null;
  /** Publishes of its temp file begun so far (see {@linkcode Store.markPublishing}). */
  readonly publishes: number;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly file: FileRecord;
}

/** A ready file to queue, with the vessels that take it. */
export interface ReadyFileRecord extends FileIdentity {
  readonly directory: string;
  readonly relpath: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly vessels: readonly string[];
}

/** What `enqueue` did with a ready file. */
export type EnqueueResult = "new" | "changed" | "unchanged";

/** One row of `contentmonster status`. */
export interface QueueStatus {
  readonly directory: string;
  readonly vessel: string;
  readonly queuedFiles: number;
  readonly queuedBytes: number;
  readonly inProgress: number;
  readonly failed: number;
  readonly lastError: string | null;
}

/**
 * How a vessel is doing: `idle` (nothing to send), `connected` (sending),
 * `backing-off` (a vessel-wide failure; tried again at `backoffUntil`),
 * `failing` (a failure only the operator can fix: host key, authentication,
 * a missing ability; tried again at `backoffUntil`).
 */
export type VesselState = "idle" | "connected" | "backing-off" | "failing";

/** A vessel's health as its worker last recorded it, for `status`. */
export interface VesselHealthRecord {
  readonly vessel: string;
  readonly state: VesselState;
  /** When the vessel entered `state` (ms since the epoch). */
  readonly since: number | null;
  readonly backoffUntil: number | null;
  /** The last vessel-wide error while the vessel fails, else `null`. */
  readonly lastError: string | null;
  /** When the current run of failures began. */
  readonly failingSince: number | null;
  readonly lastSuccessAt: number | null;
  /** Bytes per second sent over the minute before `updatedAt` (or since traffic began). */
  readonly bytesPerSecond: number;
  /** When the daemon last wrote this record. */
  readonly updatedAt: number | null;
}

/** The longest-waiting queued file of a directory. */
export interface OldestWaiting {
  readonly directory: string;
  readonly relpath: string;
  readonly queuedAt: number;
  /** Files of the directory not yet moved to processed/. */
  readonly files: number;
}

type Row = Record<string, SQLInputValue>;

/** The states of an unfinished delivery, as an SQL list; failed ones only with `includeFailed`. */
function openStates(includeFailed: boolean): string {
  return includeFailed ? "('pending', 'publishing', 'failed')" : "('pending', 'publishing')";
}

const FILE_COLUMNS =
  "f.id, f.directory, f.relpath, f.size, f.mtime_ms, f.version, f.sha256, f.dev, f.ino, f.ctime_ms";
const DELIVERY_COLUMNS = `d.id AS d_id, d.vessel, d.state, d.parts_version, d.publishes, d.attempts,
  d.last_error, ${FILE_COLUMNS}`;

/** The SQLite state database of one shore. */
export class Store {
  readonly #db: DatabaseSync;
  readonly #lock: InstanceLock | undefined;
  readonly #statements = new Map<string, StatementSync>();
  readonly #walSync: WalSync;
  readonly #group = new CommitGroup({
    transaction: (body) => this.#transaction(body),
    isolated: (work) => this.#transaction(work),
    durable: () => this.#walSync.sync(),
  });
  /** Unique per database, so several shores can share a vessel's TempDir. */
  readonly instanceId: string;

  private constructor(db: DatabaseSync, path: string, lock: InstanceLock | undefined) {
    this.#db = db;
    this.#walSync = new WalSync(`${path}-wal`);
    this.#lock = lock;
    this.instanceId = this.#instanceId();
  }

  /**
   * Opens (creating if needed) the database at `path` and migrates it. With
   * `exclusive` (for `run` and `once`), first takes the database's
   * {@linkcode InstanceLock} until {@linkcode close}, or throws
   * `DatabaseLockedError` at once when another process holds it.
   */
  static async open(path: string, options: { exclusive?: boolean } = {}): Promise<Store> {
    // It names, sizes and hashes files of Locations that may be closed to other users: a new
    // database and the directories made for it are the daemon user's alone (SQLite gives its
    // -wal and -shm the database's mode). One that exists keeps the mode it has.
    const slash = path.lastIndexOf("/");
    if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true, mode: 0o700 });
    const lock = options.exclusive ? await InstanceLock.acquire(path) : undefined;
    let db: DatabaseSync | undefined;
    try {
      createPrivate(path);
      db = new DatabaseSync(path);
      // First, so that the statements below wait for another process instead of failing.
      db.exec("PRAGMA busy_timeout = 5000");
      await walMode(db);
      // A commit writes the WAL without waiting for the disk; grouped() waits
      // for WalSync's flush, off this thread. A commit outside a group can be
      // lost to a power cut, never half-applied: nothing irreversible follows
      // one before a grouped commit is on disk.
      db.exec("PRAGMA synchronous = NORMAL");
      db.exec("PRAGMA foreign_keys = ON");
      migrate(db);
      return new Store(db, path, lock);
    } catch (error) {
      if (db?.isOpen) db.close();
      lock?.release();
      throw new Error(`Cannot open state database "${path}"`, { cause: error });
    }
  }

  #instanceId(): string {
    const select = this.#sql("SELECT value FROM meta WHERE key = 'instance_id'");
    const row = select.get();
    if (row) return String(row.value);
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
    // Another process opening a new database at the same moment may have written one first.
    this.#sql("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?)").run(id);
    return String(select.get()!.value);
  }

  /**
   * The prepared statement for `sql`, prepared once: each statement holds
   * native memory that V8 does not see, so preparing one per call let a
   * busy queue grow the RSS by hundreds of MiB before a collection freed them.
   */
  #sql(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  /** Runs `work` in a transaction, or in a savepoint when one is open (a grouped write). */
  #transaction<T>(work: () => T): T {
    if (this.#db.isTransaction) {
      this.#db.exec("SAVEPOINT nested");
      try {
        const result = work();
        this.#db.exec("RELEASE nested");
        return result;
      } catch (error) {
        this.#db.exec("ROLLBACK TO nested");
        this.#db.exec("RELEASE nested");
        throw error;
      }
    }
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = work();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /**
   * Runs `work` (calls of this store's methods) in one transaction with the
   * other work grouped before the next timer turn, and resolves with its
   * result once that transaction is committed: deliveries that finish
   * together share one disk flush. A `work` that throws is undone alone.
   */
  grouped<T>(work: () => T): Promise<T> {
    return this.#group.add(work);
  }

  /**
   * Records a ready file with a delivery to each of `vessels`. A file already
   * queued with another size or mtime becomes a new version: its deliveries
   * start over.
   */
  enqueue(
    directory: string,
    relpath: string,
    size: number,
    mtimeMs: number,
    vessels: readonly string[],
    identity: FileIdentity = {},
  ): { fileId: number; result: EnqueueResult } {
    return this.enqueueMany([{ directory, relpath, size, mtimeMs, vessels, ...identity }])[0];
  }

  /** {@linkcode enqueue} for many files in one commit (one disk flush, not one per file). */
  enqueueMany(files: readonly ReadyFileRecord[]): { fileId: number; result: EnqueueResult }[] {
    return this.#transaction(() => files.map((file) => this.#enqueueOne(file)));
  }

  #enqueueOne(file: ReadyFileRecord): { fileId: number; result: EnqueueResult } {
    const { directory, relpath, size, mtimeMs, vessels } = file;
    const existing = this.#sql(
      `SELECT ${FILE_COLUMNS} FROM files f WHERE directory = ? AND relpath = ?`,
    )
      .get(directory, relpath);
    let fileId: number;
    let result: EnqueueResult;
    if (!existing) {
      fileId = Number(
        this.#sql(
          `INSERT INTO files (directory, relpath, size, mtime_ms, dev, ino, ctime_ms, queued_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          directory,
          relpath,
          size,
          mtimeMs,
          file.dev ?? null,
          file.ino ?? null,
          file.ctimeMs ?? null,
          Date.now(),
        ).lastInsertRowid,
      );
      result = "new";
    } else {
      fileId = Number(existing.id);
      const same = sameFileVersion(toFile(existing), file);
      if (!same) this.#newVersion(fileId, file);
      result = same ? "unchanged" : "changed";
    }
    const insert = this.#sql(
      "INSERT OR IGNORE INTO deliveries (file_id, vessel) VALUES (?, ?)",
    );
    for (const vessel of vessels) insert.run(fileId, vessel);
    return { fileId, result };
  }

  #newVersion(fileId: number, stat: { size: number; mtimeMs: number } & FileIdentity): void {
    this.#sql(
      `UPDATE files SET size = ?, mtime_ms = ?, dev = ?, ino = ?, ctime_ms = ?,
         version = version + 1, sha256 = NULL
       WHERE id = ?`,
    ).run(
      stat.size,
      stat.mtimeMs,
      stat.dev ?? null,
      stat.ino ?? null,
      stat.ctimeMs ?? null,
      fileId,
    );
    this.#sql(
      `UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0,
         last_error = NULL WHERE file_id = ?`,
    ).run(fileId);
    this.#sql(
      "DELETE FROM parts WHERE delivery_id IN (SELECT id FROM deliveries WHERE file_id = ?)",
    ).run(fileId);
  }

  /** The source changed under a queued file: send it again as a new version. */
  fileChanged(fileId: number, size: number, mtimeMs: number, identity: FileIdentity = {}): void {
    this.#transaction(() => this.#newVersion(fileId, { size, mtimeMs, ...identity }));
  }

  /**
   * Makes the queue match the config: every queued file of `directory` gets a
   * delivery to each of `vessels`, and loses its unfinished deliveries to any
   * other vessel.
   */
  reconcile(directory: string, vessels: readonly string[]): void {
    this.#transaction(() => {
      const wanted = JSON.stringify(vessels);
      this.#sql(
        `DELETE FROM deliveries WHERE state != 'done'
           AND vessel NOT IN (SELECT value FROM json_each(?))
           AND file_id IN (SELECT id FROM files WHERE directory = ?)`,
      ).run(wanted, directory);
      this.#sql(
        `INSERT OR IGNORE INTO deliveries (file_id, vessel)
         SELECT f.id, v.value FROM files f, json_each(?) v WHERE f.directory = ?`,
      ).run(wanted, directory);
    });
  }

  /** Queued files of directories no longer configured; they are left alone. */
  orphanDirectories(configured: readonly string[]): string[] {
    return this.#sql(
      `SELECT DISTINCT directory FROM files
       WHERE directory NOT IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(configured)).map((row) => String(row.directory));
  }

  /** Makes failed deliveries pending again (at start-up: the operator may have fixed things). */
  retryFailed(): number {
    return Number(
      this.#sql(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = 0 WHERE state = 'failed'",
      ).run().changes,
    );
  }

  /** A queued file, or `undefined` once it is finished. */
  file(fileId: number): FileRecord | undefined {
    const row = this.#sql(
      `SELECT ${FILE_COLUMNS} FROM files f WHERE id = ?`,
    ).get(fileId);
    return row ? toFile(row) : undefined;
  }

  /** A file by its place, or `undefined` when it is not queued. */
  fileAt(directory: string, relpath: string): FileRecord | undefined {
    const row = this.#sql(
      `SELECT ${FILE_COLUMNS} FROM files f WHERE directory = ? AND relpath = ?`,
    ).get(directory, relpath);
    return row ? toFile(row) : undefined;
  }

  /** One delivery with its file, or `undefined` if it no longer exists. */
  delivery(deliveryId: number): DeliveryRecord | undefined {
    const row = this.#sql(
      `SELECT ${DELIVERY_COLUMNS} FROM deliveries d JOIN files f ON f.id = d.file_id
       WHERE d.id = ?`,
    ).get(deliveryId);
    return row ? toDelivery(row) : undefined;
  }

  /**
   * Deliveries to `vessel` due at `now`, oldest file first, skipping `busy`.
   * Failed deliveries are due again after their back-off when `includeFailed`.
   */
  nextDeliveries(
    vessel: string,
    now: number,
    limit: number,
    busy: Iterable<number>,
    includeFailed: boolean,
  ): DeliveryRecord[] {
    const states = openStates(includeFailed);
    // The first state test names the partial index deliveries_due (same expression), which
    // yields the vessel's open deliveries in file order: no sort of every due row.
    return this.#sql(
      `SELECT ${DELIVERY_COLUMNS} FROM deliveries d INDEXED BY deliveries_due
         JOIN files f ON f.id = d.file_id
       WHERE d.state IN ('pending', 'publishing', 'failed')
         AND d.vessel = ? AND d.state IN ${states} AND d.next_attempt_at <= ?
         AND d.id NOT IN (SELECT value FROM json_each(?))
       ORDER BY d.file_id LIMIT ?`,
    ).all(vessel, now, JSON.stringify([...busy]), limit).map(toDelivery);
  }

  /**
   * When the next delivery to `vessel` is due, `busy` aside (those running
   * are due too, since they are unfinished, and would wake a worker at once).
   */
  nextDueAt(
    vessel: string,
    includeFailed: boolean,
    busy: Iterable<number> = [],
  ): number | undefined {
    const states = openStates(includeFailed);
    const row = this.#sql(
      `SELECT MIN(next_attempt_at) AS due FROM deliveries
       WHERE vessel = ? AND state IN ${states} AND id NOT IN (SELECT value FROM json_each(?))`,
    ).get(vessel, JSON.stringify([...busy]));
    return row?.due === null || row?.due === undefined ? undefined : Number(row.due);
  }

  /**
   * The vessel's parts now belong to `version` (`null`: the vessel holds
   * none); parts recorded before are gone.
   */
  startParts(deliveryId: number, version: number | null): void {
    this.#transaction(() => {
      this.#sql("DELETE FROM parts WHERE delivery_id = ?").run(deliveryId);
      this.#sql("UPDATE deliveries SET parts_version = ? WHERE id = ?")
        .run(version, deliveryId);
    });
  }

  /** Part `index` of a delivery is whole on its vessel. */
  markPartDone(deliveryId: number, index: number): void {
    this.#sql("INSERT OR IGNORE INTO parts (delivery_id, idx) VALUES (?, ?)")
      .run(deliveryId, index);
  }

  /** How many parts of a delivery are recorded as sent. */
  partsDone(deliveryId: number): number {
    return Number(
      this.#sql("SELECT COUNT(*) AS n FROM parts WHERE delivery_id = ?").get(deliveryId)
        ?.n ?? 0,
    );
  }

  /**
   * The assembled copy of `version`, verified as `sha256`, is about to be
   * renamed into place; the hash is kept so a restart can check the vessel
   * without reading the source again. False when the file has become a
   * newer version meanwhile, or becomes one here: another vessel's copy of
   * this version was verified with another hash, so the source changed
   * between the two reads where its stat could not tell (a one-part file is
   * verified against the bytes each attempt read), and every vessel must
   * get the same bytes again. Counts the publish, and forgets the parts
   * (they are removed while the file is published).
   */
  markPublishing(deliveryId: number, version: number, sha256: string): boolean {
    return this.#transaction(() => {
      const row = this.#sql(
        `SELECT ${FILE_COLUMNS} FROM files f JOIN deliveries d ON d.file_id = f.id WHERE d.id = ?`,
      ).get(deliveryId);
      if (!row || Number(row.version) !== version) return false;
      if (row.sha256 !== null && row.sha256 !== sha256) {
        const file = toFile(row);
        this.#newVersion(file.id, file);
        return false;
      }
      // The parts go while the file is published, and a later try names its files anew.
      this.#sql(
        `UPDATE deliveries SET state = 'publishing', publishes = publishes + 1,
           parts_version = NULL WHERE id = ?`,
      ).run(deliveryId);
      this.#sql("DELETE FROM parts WHERE delivery_id = ?").run(deliveryId);
      this.#sql("UPDATE files SET sha256 = ? WHERE id = ?").run(sha256, Number(row.id));
      return true;
    });
  }

  /**
   * The vessel holds a verified copy of `version`: the delivery is done.
   * False when the file has become a newer version meanwhile.
   */
  markDelivered(deliveryId: number, version: number): boolean {
    return this.#transaction(() => {
      const changed = this.#sql(
        `UPDATE deliveries SET state = 'done', last_error = NULL, attempts = 0
         WHERE id = ? AND (SELECT version FROM files WHERE id = file_id) = ?`,
      ).run(deliveryId, version).changes === 1;
      if (changed) this.#sql("DELETE FROM parts WHERE delivery_id = ?").run(deliveryId);
      return changed;
    });
  }

  /**
   * A delivery failed; it is tried again at `retryAt` (as `failed` when
   * permanent). A transient failure keeps `publishing`: the rename may have
   * happened before the connection dropped, so the retry checks the vessel
   * first instead of assembling and publishing again.
   */
  markAttemptFailed(deliveryId: number, error: string, retryAt: number, permanent: boolean): void {
    this.#sql(
      `UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,
         state = CASE WHEN ? THEN 'failed' WHEN state IN ('done', 'publishing') THEN state
           ELSE 'pending' END
       WHERE id = ?`,
    ).run(error, retryAt, permanent ? 1 : 0, deliveryId);
  }

  /** Drops one delivery (its source vanished); the file row stays until all are gone. */
  dropDelivery(deliveryId: number): void {
    this.#sql("DELETE FROM deliveries WHERE id = ?").run(deliveryId);
  }

  /**
   * Every delivery in the queue, by id and publishes so far, which name its
   * files on vessels (those are not leftovers).
   */
  deliveryNames(): { id: number; publishes: number }[] {
    return this.#sql("SELECT id, publishes FROM deliveries").all().map((row) => ({
      id: Number(row.id),
      publishes: Number(row.publishes),
    }));
  }

  /** Whether every delivery of a file is done (true when it has none). */
  isFileDone(fileId: number): boolean {
    const row = this.#sql(
      "SELECT COUNT(*) AS n FROM deliveries WHERE file_id = ? AND state != 'done'",
    ).get(fileId);
    return Number(row?.n ?? 0) === 0;
  }

  /** The vessels holding a verified copy of a file, by name. */
  deliveredVessels(fileId: number): string[] {
    return this.#sql(
      "SELECT vessel FROM deliveries WHERE file_id = ? AND state = 'done' ORDER BY vessel",
    ).all(fileId).map((row) => String(row.vessel));
  }

  /** Whether the file has any delivery left (done or not). */
  hasDeliveries(fileId: number): boolean {
    return this.#sql("SELECT 1 FROM deliveries WHERE file_id = ? LIMIT 1").get(fileId) !==
      undefined;
  }

  /** Files whose every delivery is done, waiting to move to processed/. */
  doneFiles(): FileRecord[] {
    return this.#sql(
      `SELECT ${FILE_COLUMNS} FROM files f
       WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.file_id = f.id AND d.state != 'done')`,
    ).all().map(toFile);
  }

  /** Forgets a finished or vanished file and its deliveries. */
  removeFile(fileId: number): void {
    this.#sql("DELETE FROM files WHERE id = ?").run(fileId);
  }

  /** Counts of files still queued and of deliveries failed permanently. */
  counts(): { files: number; pending: number; failed: number } {
    const row = this.#sql(
      `SELECT (SELECT COUNT(*) FROM files) AS files,
         (SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'publishing')) AS pending,
         (SELECT COUNT(*) FROM deliveries WHERE state = 'failed') AS failed`,
    ).get();
    return {
      files: Number(row?.files),
      pending: Number(row?.pending),
      failed: Number(row?.failed),
    };
  }

  /** Records a vessel's health (written by its worker, read by `status`). */
  recordVesselHealth(health: VesselHealthRecord): void {
    this.#sql(
      `INSERT INTO vessels (name, state, state_since, backoff_until, last_error, error_at,
         last_success_at, recent_rate, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET state = excluded.state,
         state_since = excluded.state_since, backoff_until = excluded.backoff_until,
         last_error = excluded.last_error, error_at = excluded.error_at,
         last_success_at = excluded.last_success_at, recent_rate = excluded.recent_rate,
         updated_at = excluded.updated_at`,
    ).run(
      health.vessel,
      health.state,
      health.since,
      health.backoffUntil,
      health.lastError,
      health.failingSince,
      health.lastSuccessAt,
      health.bytesPerSecond,
      health.updatedAt,
    );
  }

  /** Every vessel's recorded health, by name. */
  vesselHealth(): VesselHealthRecord[] {
    return this.#sql(
      `SELECT name, state, state_since, backoff_until, last_error, error_at, last_success_at,
         recent_rate, updated_at FROM vessels ORDER BY name`,
    ).all().map((row) => ({
      vessel: String(row.name),
      state: String(row.state) as VesselState,
      since: nullableNumber(row.state_since),
      backoffUntil: nullableNumber(row.backoff_until),
      lastError: row.last_error === null ? null : String(row.last_error),
      failingSince: nullableNumber(row.error_at),
      lastSuccessAt: nullableNumber(row.last_success_at),
      bytesPerSecond: Number(row.recent_rate),
      updatedAt: nullableNumber(row.updated_at),
    }));
  }

  /** Per directory, the file queued longest ago that still waits (oldest first). */
  oldestWaiting(): OldestWaiting[] {
    return this.#sql(
      `SELECT directory, relpath, MIN(queued_at) AS queued_at, COUNT(*) AS files FROM files
       GROUP BY directory ORDER BY directory`,
    ).all().map((row) => ({
      directory: String(row.directory),
      relpath: String(row.relpath),
      queuedAt: Number(row.queued_at),
      files: Number(row.files),
    }));
  }

  /** The queue per directory and vessel, for `status`. */
  queueStatus(): QueueStatus[] {
    return this.#sql(
      `SELECT f.directory, d.vessel,
         SUM(d.state != 'done') AS queued_files,
         SUM(CASE WHEN d.state != 'done' THEN f.size ELSE 0 END) AS queued_bytes,
         SUM(d.state = 'publishing' OR (d.state = 'pending'
           AND EXISTS (SELECT 1 FROM parts p WHERE p.delivery_id = d.id))) AS in_progress,
         SUM(d.state = 'failed') AS failed,
         (SELECT d2.last_error FROM deliveries d2 JOIN files f2 ON f2.id = d2.file_id
           WHERE f2.directory = f.directory AND d2.vessel = d.vessel
             AND d2.last_error IS NOT NULL ORDER BY d2.id DESC LIMIT 1) AS last_error
       FROM deliveries d JOIN files f ON f.id = d.file_id
       GROUP BY f.directory, d.vessel ORDER BY f.directory, d.vessel`,
    ).all().map((row) => ({
      directory: String(row.directory),
      vessel: String(row.vessel),
      queuedFiles: Number(row.queued_files),
      queuedBytes: Number(row.queued_bytes),
      inProgress: Number(row.in_progress),
      failed: Number(row.failed),
      lastError: row.last_error === null ? null : String(row.last_error),
    }));
  }

  /**
   * The files the latest full scan of `directory` found but cannot address
   * (their names are not valid UTF-8), replacing what an earlier scan found.
   */
  setUnaddressable(directory: string, relpaths: readonly string[]): void {
    this.#transaction(() => {
      this.#sql("DELETE FROM unaddressable_files WHERE directory = ?").run(directory);
      const insert = this.#sql(
        "INSERT OR IGNORE INTO unaddressable_files (directory, relpath, seen_at) VALUES (?, ?, ?)",
      );
      const now = Date.now();
      for (const relpath of relpaths) insert.run(directory, relpath, now);
    });
  }

  /** Files found but not replicable, for `status` and `once`. */
  unaddressableFiles(): { directory: string; relpath: string; seenAt: number }[] {
    return this.#sql(
      "SELECT directory, relpath, seen_at FROM unaddressable_files ORDER BY directory, relpath",
    ).all().map((row) => ({
      directory: String(row.directory),
      relpath: String(row.relpath),
      seenAt: Number(row.seen_at),
    }));
  }

  /** Closes the database and releases its lock. */
  close(): void {
    if (this.#db.isOpen) {
      // The last commit flushes the whole WAL itself, as WalSync could not after the close.
      this.#db.exec("PRAGMA synchronous = FULL");
      this.#group.flush();
      this.#db.close();
      this.#walSync.close();
    }
    this.#lock?.release();
  }
}

/** How long opening waits for other processes to let the database switch to WAL. */
const WAL_SWITCH_MS = 5_000;

/**
 * Switches the database to WAL. SQLite answers "database is locked" at once,
 * without the busy timeout, when other processes open a new database at the
 * same moment (found by six `status` at once on a new database): try again
 * for a while.
 */
async function walMode(db: DatabaseSync): Promise<void> {
  const until = Date.now() + WAL_SWITCH_MS;
  for (let pause = 5;; pause = Math.min(pause * 2, 200)) {
    try {
      db.exec("PRAGMA journal_mode = WAL");
      return;
    } catch (error) {
      if (!/database is locked/i.test(String(error)) || Date.now() >= until) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

function migrate(db: DatabaseSync): void {
  const schemaVersion = () => Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0);
  for (;;) {
    const version = schemaVersion();
    if (version > MIGRATIONS.length) {
      throw new Error(
        `schema version ${version} is newer than this ContentMonster knows (${MIGRATIONS.length})`,
      );
    }
    if (version === MIGRATIONS.length) return;
    db.exec("BEGIN IMMEDIATE");
    try {
      // Read again under the write lock: another process may have migrated meanwhile.
      const next = schemaVersion();
      if (next < MIGRATIONS.length) {
        db.exec(MIGRATIONS[next]);
        db.exec(`PRAGMA user_version = ${next + 1}`);
      }
      db.exec("COMMIT");
    } catch (error) {
      db.exec("ROLLBACK");
      throw new Error(`Cannot apply migration ${version + 1}`, { cause: error });
    }
  }
}

function nullableNumber(value: SQLInputValue | undefined): number | null {
  return value === null || value === undefined ? null : Number(value);
}

function toFile(row: Row): FileRecord {
  return {
    id: Number(row.id),
    directory: String(row.directory),
    relpath: String(row.relpath),
    size: Number(row.size),
    mtimeMs: Number(row.mtime_ms),
    version: Number(row.version),
    sha256: row.sha256 === null ? null : String(row.sha256),
    dev: nullableNumber(row.dev),
    ino: nullableNumber(row.ino),
    ctimeMs: nullableNumber(row.ctime_ms),
  };
}

/** Same size and mtime, and the same device, inode and ctime where both are known. */
function sameFileVersion(
  a: { size: number; mtimeMs: number } & FileIdentity,
  b: { size: number; mtimeMs: number } & FileIdentity,
): boolean {
  const same = (x: number | null | undefined, y: number | null | undefined) =>
    x === null || x === undefined || y === null || y === undefined || x === y;
  return a.size === b.size && a.mtimeMs === b.mtimeMs && same(a.dev, b.dev) &&
    same(a.ino, b.ino) && same(a.ctimeMs, b.ctimeMs);
}

function toDelivery(row: Row): DeliveryRecord {
  return {
    id: Number(row.d_id),
    vessel: String(row.vessel),
    state: String(row.state) as DeliveryState,
    partsVersion: row.parts_version === null ? null : Number(row.parts_version),
    publishes: Number(row.publishes),
    attempts: Number(row.attempts),
    lastError: row.last_error === null ? null : String(row.last_error),
    file: toFile(row),
  };
}

/** Creates `path` empty and 0600 unless it exists (SQLite takes an empty file for a new database). */
function createPrivate(path: string): void {
  try {
    Deno.openSync(path, { createNew: true, write: true, mode: 0o600 }).close();
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
}
