/** `contentmonster status`: the queue per directory and vessel. */
import type { Config } from "../config/types.ts";
import { print } from "../log/logger.ts";
import { type QueueStatus, Store, type VesselStatus } from "../store/store.ts";

/** Prints the queue as a table or JSON; exits 0. */
export async function showStatus(config: Config, json: boolean): Promise<number> {
  let queue: QueueStatus[] = [];
  let vessels: VesselStatus[] = [];
  if (await exists(config.monster.database)) {
    const store = await Store.open(config.monster.database);
    try {
      queue = store.queueStatus();
      vessels = store.vesselStatus().filter((v) => v.lastError !== null);
    } finally {
      store.close();
    }
  }
  const rows = withConfiguredPairs(config, queue);
  if (json) {
    print(JSON.stringify({ queue: rows, vesselErrors: vessels }, null, 2));
    return 0;
  }
  const table = [["DIRECTORY", "VESSEL", "QUEUED", "BYTES", "IN PROGRESS", "FAILED", "LAST ERROR"]];
  for (const row of rows) {
    table.push([
      row.directory,
      row.vessel,
      String(row.queuedFiles),
      formatBytes(row.queuedBytes),
      String(row.inProgress),
      String(row.failed),
      row.lastError ?? "",
    ]);
  }
  print(formatTable(table));
  for (const vessel of vessels) {
    const since = vessel.errorAt ? ` (since ${new Date(vessel.errorAt).toISOString()})` : "";
    print(`vessel "${vessel.vessel}": ${vessel.lastError}${since}`);
  }
  return 0;
}

function withConfiguredPairs(config: Config, queue: QueueStatus[]): QueueStatus[] {
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

/** Aligns columns with two spaces between them. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd())
    .join("\n");
}

function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
