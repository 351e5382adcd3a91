/** `contentmonster status`: is it healthy? Vessels, directories and the queue. */
import type { Config } from "../config/types.ts";
import { print } from "../log/logger.ts";
import { formatBytes, formatDuration, formatRate, plural } from "../log/units.ts";
import { Store } from "../store/store.ts";
import { formatTable } from "./format_table.ts";
import { escapeName } from "../watch/watcher.ts";
import {
  type StatusReport,
  statusReport,
  type StoredStatus,
  type VesselReport,
} from "./status_report.ts";

/** Prints the report as tables or JSON; exits 0. Reads the database only. */
export async function showStatus(config: Config, json: boolean): Promise<number> {
  let stored: StoredStatus = { health: [], queue: [], oldest: [] };
  if (await exists(config.monster.database)) {
    const store = await Store.open(config.monster.database);
    try {
      stored = {
        health: store.vesselHealth(),
        queue: store.queueStatus(),
        oldest: store.oldestWaiting(),
        unaddressable: store.unaddressableFiles(),
      };
    } finally {
      store.close();
    }
  }
  const report = statusReport(config, stored);
  print(json ? JSON.stringify(report, null, 2) : renderStatus(report));
  return 0;
}

/** The report as three tables: vessels, directories, the queue per directory and vessel. */
export function renderStatus(report: StatusReport): string {
  const now = Date.parse(report.now);
  const vessels = [["VESSEL", "STATE", "LAST DELIVERY", "LAST MINUTE", "QUEUED", "FAILED"]];
  const errors: string[] = [];
  for (const vessel of report.vessels) {
    vessels.push([
      vessel.vessel,
      describeState(vessel, now),
      vessel.lastSuccessAt
        ? `${clock(vessel.lastSuccessAt, now)} (${ago(vessel.lastSuccessAt, now)})`
        : "never",
      formatRate(vessel.bytesPerSecondLastMinute),
      `${plural(vessel.queuedFiles, "file")}, ${formatBytes(vessel.queuedBytes)}`,
      String(vessel.failed),
    ]);
    if (vessel.lastError) {
      const since = vessel.failingSince ? ` since ${clock(vessel.failingSince, now)}` : "";
      errors.push(`vessel "${vessel.vessel}" failing${since}: ${oneLine(vessel.lastError)}`);
    }
  }
  const directories = [["DIRECTORY", "WAITING", "OLDEST", "AGE"]];
  for (const directory of report.directories) {
    directories.push([
      directory.directory,
      plural(directory.waitingFiles, "file"),
      directory.oldestFile === null ? "" : JSON.stringify(directory.oldestFile),
      directory.oldestAgeSeconds === null ? "" : formatDuration(directory.oldestAgeSeconds * 1000),
    ]);
  }
  const queue = [["DIRECTORY", "VESSEL", "QUEUED", "BYTES", "IN PROGRESS", "FAILED", "LAST ERROR"]];
  for (const row of report.queue) {
    queue.push([
      row.directory,
      row.vessel,
      String(row.queuedFiles),
      formatBytes(row.queuedBytes),
      String(row.inProgress),
      String(row.failed),
      oneLine(row.lastError ?? ""),
    ]);
  }
  const skipped = report.unaddressable.map(({ directory, relpath }) =>
    `directory "${directory}": cannot replicate ${
      escapeName(relpath)
    } (name not valid UTF-8; rename it)`
  );
  return [
    formatTable(vessels),
    ...errors,
    "",
    formatTable(directories),
    ...skipped,
    "",
    formatTable(queue),
  ].join("\n");
}

function describeState(vessel: VesselReport, now: number): string {
  let text: string;
  switch (vessel.state) {
    case "unknown":
      return "unknown (no daemon has run)";
    case "backing-off": {
      const until = vessel.backoffUntil ?? new Date(now).toISOString();
      text = Date.parse(until) > now
        ? `backing off until ${clock(until, now)}`
        : `retrying (backed off until ${clock(until, now)})`;
      break;
    }
    case "failing": {
      const until = vessel.backoffUntil;
      text = until && Date.parse(until) > now
        ? `failing, needs the operator (next try ${clock(until, now)})`
        : "failing, needs the operator";
      break;
    }
    default:
      text = vessel.since ? `${vessel.state} since ${clock(vessel.since, now)}` : vessel.state;
  }
  return vessel.stale && vessel.updatedAt
    ? `${text} (as of ${ago(vessel.updatedAt, now)}: daemon not running?)`
    : text;
}

/** An error on one line, so a table stays a table (ssh's stderr has several). */
function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, "; ");
}

/** `14:03:01Z` today (UTC), else the date too. */
function clock(iso: string, now: number): string {
  const today = new Date(now).toISOString().slice(0, 10);
  return iso.startsWith(today) ? `${iso.slice(11, 19)}Z` : `${iso.slice(0, 19)}Z`;
}

function ago(iso: string, now: number): string {
  return `${formatDuration(Math.max(0, now - Date.parse(iso)))} ago`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
