/**
 * What `status` knows, read from the state database only (so it works beside
 * a running daemon): each vessel's health and queue, each directory's
 * longest-waiting file, the queue per directory and vessel.
 */
import type { Config } from "../config/types.ts";
import type {
  OldestWaiting,
  QueueStatus,
  VesselHealthRecord,
  VesselState,
} from "../store/store.ts";

/**
 * A health record older than this was not written by a running daemon: its
 * worker rewrites it at least every 10 s.
 */
export const STALE_MS = 30_000;

/** One vessel in `status`. Times are ISO 8601 (UTC) or `null`. */
export interface VesselReport {
  readonly vessel: string;
  /** `unknown` when no daemon has recorded it yet. */
  readonly state: VesselState | "unknown";
  readonly since: string | null;
  readonly backoffUntil: string | null;
  readonly failingSince: string | null;
  readonly lastError: string | null;
  readonly lastSuccessAt: string | null;
  /** Average bytes per second over the minute before `updatedAt`; 0 when stale. */
  readonly bytesPerSecondLastMinute: number;
  readonly queuedFiles: number;
  readonly queuedBytes: number;
  readonly inProgress: number;
  readonly failed: number;
  /** When a daemon last wrote the vessel's record. */
  readonly updatedAt: string | null;
  /** Whether that was so long ago that no daemon seems to run now. */
  readonly stale: boolean;
}

/** One directory in `status`. */
export interface DirectoryReport {
  readonly directory: string;
  /** Files not yet moved to processed/. */
  readonly waitingFiles: number;
  readonly oldestFile: string | null;
  readonly oldestQueuedAt: string | null;
  readonly oldestAgeSeconds: number | null;
}

/** Everything `status` shows; `--json` prints it as is. */
export interface StatusReport {
  readonly now: string;
  readonly vessels: readonly VesselReport[];
  readonly directories: readonly DirectoryReport[];
  readonly queue: readonly QueueStatus[];
  /** Files found but not replicable (names that are not valid UTF-8). */
  readonly unaddressable: readonly { directory: string; relpath: string }[];
}

/** What the store holds for `status`. */
export interface StoredStatus {
  readonly health: readonly VesselHealthRecord[];
  readonly queue: readonly QueueStatus[];
  readonly oldest: readonly OldestWaiting[];
  readonly unaddressable?: readonly { directory: string; relpath: string }[];
}

/** Builds the report of `config`'s vessels and directories from what the store holds. */
export function statusReport(config: Config, stored: StoredStatus, now = Date.now()): StatusReport {
  const queue = withConfiguredPairs(config, stored.queue);
  const vessels = config.vessels.map((vessel): VesselReport => {
    const health = stored.health.find((h) => h.vessel === vessel.name);
    const rows = queue.filter((row) => row.vessel === vessel.name);
    const sum = (pick: (row: QueueStatus) => number) => rows.reduce((n, row) => n + pick(row), 0);
    const stale = health?.updatedAt == null || now - health.updatedAt > STALE_MS;
    const fresh = health?.updatedAt != null && now - health.updatedAt <= 60_000;
    return {
      vessel: vessel.name,
      state: health?.state ?? "unknown",
      since: iso(health?.since),
      backoffUntil: iso(health?.backoffUntil),
      failingSince: iso(health?.failingSince),
      lastError: health?.lastError ?? null,
      lastSuccessAt: iso(health?.lastSuccessAt),
      bytesPerSecondLastMinute: fresh ? health?.bytesPerSecond ?? 0 : 0,
      queuedFiles: sum((row) => row.queuedFiles),
      queuedBytes: sum((row) => row.queuedBytes),
      inProgress: sum((row) => row.inProgress),
      failed: sum((row) => row.failed),
      updatedAt: iso(health?.updatedAt),
      stale,
    };
  });
  const directories = config.directories.map((directory): DirectoryReport => {
    const oldest = stored.oldest.find((o) => o.directory === directory.name);
    return {
      directory: directory.name,
      waitingFiles: oldest?.files ?? 0,
      oldestFile: oldest?.relpath ?? null,
      oldestQueuedAt: iso(oldest?.queuedAt),
      oldestAgeSeconds: oldest ? Math.max(0, Math.round((now - oldest.queuedAt) / 1000)) : null,
    };
  });
  const unaddressable = (stored.unaddressable ?? [])
    .map(({ directory, relpath }) => ({ directory, relpath }));
  return { now: new Date(now).toISOString(), vessels, directories, queue, unaddressable };
}

function iso(ms: number | null | undefined): string | null {
  return ms == null ? null : new Date(ms).toISOString();
}

function withConfiguredPairs(config: Config, queue: readonly QueueStatus[]): QueueStatus[] {
  const rows = [...queue];
  for (const directory of config.directories) {
    for (const vessel of config.vessels) {
      if (vessel.ignoreDirs.includes(directory.name)) continue;
      if (rows.some((r) => r.directory === directory.name && r.vessel === vessel.name)) continue;
      rows.push({
        directory: directory.name,
        vessel: vessel.name,
        queuedFiles: 0,
        queuedBytes: 0,
        inProgress: 0,
        failed: 0,
        lastError: null,
      });
    }
  }
  return rows.sort((a, b) =>
    a.directory.localeCompare(b.directory) || a.vessel.localeCompare(b.vessel)
  );
}
