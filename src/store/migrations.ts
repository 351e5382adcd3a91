/**
 * Numbered schema migrations of the state database. Append only: a released
 * migration never changes, a new one gets the next number.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: files, one delivery per (file, vessel), the parts each delivery has sent.
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE files (
     id INTEGER PRIMARY KEY,
     directory TEXT NOT NULL,
     relpath TEXT NOT NULL,
     size INTEGER NOT NULL,
     mtime_ms REAL NOT NULL,
     version INTEGER NOT NULL DEFAULT 1,
     sha256 TEXT,
     queued_at INTEGER NOT NULL,
     UNIQUE (directory, relpath)
   );
   CREATE TABLE deliveries (
     id INTEGER PRIMARY KEY,
     file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
     vessel TEXT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending'
       CHECK (state IN ('pending', 'publishing', 'done', 'failed')),
     parts_version INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     UNIQUE (file_id, vessel)
   );
   CREATE INDEX deliveries_by_vessel ON deliveries (vessel, state, next_attempt_at);
   CREATE TABLE parts (
     delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     PRIMARY KEY (delivery_id, idx)
   ) WITHOUT ROWID;
   CREATE TABLE vessels (
     name TEXT PRIMARY KEY,
     last_error TEXT,
     error_at INTEGER
   );`,
  // 2: each vessel's health as its worker sees it, for `status` beside a running daemon.
  // error_at now means "failing since": set when the vessel starts failing, kept while it fails.
  `ALTER TABLE vessels ADD COLUMN state TEXT NOT NULL DEFAULT 'idle';
   ALTER TABLE vessels ADD COLUMN state_since INTEGER;
   ALTER TABLE vessels ADD COLUMN backoff_until INTEGER;
   ALTER TABLE vessels ADD COLUMN last_success_at INTEGER;
   ALTER TABLE vessels ADD COLUMN recent_rate INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE vessels ADD COLUMN updated_at INTEGER;`,
  // 3: a version is identified by device, inode, size, mtime and ctime (NULL: not known yet).
  `ALTER TABLE files ADD COLUMN dev INTEGER;
   ALTER TABLE files ADD COLUMN ino INTEGER;
   ALTER TABLE files ADD COLUMN ctime_ms REAL;`,
  // 4: files the last full scan found but cannot address (names that are not valid UTF-8).
  `CREATE TABLE unaddressable_files (
     directory TEXT NOT NULL,
     relpath TEXT NOT NULL,
     seen_at INTEGER NOT NULL,
     PRIMARY KEY (directory, relpath)
   ) WITHOUT ROWID;`,
  // 5: the queue's queries use indexes instead of sorting or scanning every delivery.
  `CREATE INDEX deliveries_due ON deliveries (vessel, file_id)
     WHERE state IN ('pending', 'publishing', 'failed');
   CREATE INDEX deliveries_by_state ON deliveries (state);`,
  // 6: a delivery's id is never given again (AUTOINCREMENT). It names the delivery's part
  // directory and temp file on vessels: once the queue emptied, the next file took id 1 again,
  // and a late operation of the finished delivery (a slow connection's part, a removal)
  // reached the new one's files. SQLite cannot add AUTOINCREMENT in place; the tables are
  // rebuilt, parts first, so that dropping the old deliveries cascades to nothing.
  `CREATE TABLE deliveries_new (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
     vessel TEXT NOT NULL,
     state TEXT NOT NULL DEFAULT 'pending'
       CHECK (state IN ('pending', 'publishing', 'done', 'failed')),
     parts_version INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     UNIQUE (file_id, vessel)
   );
   INSERT INTO deliveries_new
     (id, file_id, vessel, state, parts_version, attempts, next_attempt_at, last_error)
     SELECT id, file_id, vessel, state, parts_version, attempts, next_attempt_at, last_error
     FROM deliveries;
   CREATE TABLE parts_new (
     delivery_id INTEGER NOT NULL REFERENCES deliveries_new (id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     PRIMARY KEY (delivery_id, idx)
   ) WITHOUT ROWID;
   INSERT INTO parts_new (delivery_id, idx) SELECT delivery_id, idx FROM parts;
   DROP TABLE parts;
   DROP TABLE deliveries;
   ALTER TABLE deliveries_new RENAME TO deliveries;
   ALTER TABLE parts_new RENAME TO parts;
   CREATE INDEX deliveries_by_vessel ON deliveries (vessel, state, next_attempt_at);
   CREATE INDEX deliveries_due ON deliveries (vessel, file_id)
     WHERE state IN ('pending', 'publishing', 'failed');
   CREATE INDEX deliveries_by_state ON deliveries (state);`,
  // 7: how many times a delivery's temp file was published. A publish's rename may still be
  // on the way after its connection was given up on, so the next try writes under a name of
  // its own (see deliveryKey), never the one that rename names.
  `ALTER TABLE deliveries ADD COLUMN publishes INTEGER NOT NULL DEFAULT 0;
   UPDATE deliveries SET publishes = 1 WHERE state = 'publishing';`,
];
