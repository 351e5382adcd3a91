/**
 * The story of the engine's work as log lines, subject first: each delivery
 * with its size, time, rate and resumed parts; progress of long transfers;
 * vessels connecting, failing and coming back; files reaching processed/.
 */
import type {
  DeliveryFailure,
  DeliveryReport,
  EngineObserver,
  TransferProgress,
  VesselChange,
} from "../engine/observer.ts";
import type { FileRecord, VesselHealthRecord } from "../store/store.ts";
import { logger } from "./logger.ts";
import { formatBytes, formatDuration, formatRate } from "./units.ts";

/** When progress lines start and how far apart they stay. */
export interface ProgressTiming {
  /** A transfer gets progress lines once it has run this long. */
  readonly afterMs: number;
  /** At most one progress line per transfer this often. */
  readonly everyMs: number;
}

const DEFAULT_TIMING: ProgressTiming = { afterMs: 5_000, everyMs: 10_000 };

/** An observer that writes the engine's story to the log. */
export function engineLog(timing: ProgressTiming = DEFAULT_TIMING): EngineObserver {
  /** When each running transfer (vessel and file) last had a progress line. */
  const lastLine = new Map<string, number>();
  const announced = new Set<string>();
  return {
    progress(progress) {
      const key = transferKey(progress.vessel, progress.file);
      const now = Date.now();
      const elapsed = now - progress.startedAt;
      if (elapsed < timing.afterMs || progress.bytesDone >= progress.file.size) return;
      if (now - (lastLine.get(key) ?? -Infinity) < timing.everyMs) return;
      lastLine.set(key, now);
      logger(subject(progress.vessel, progress.file)).info(progressLine(progress, elapsed));
    },
    delivered(report) {
      lastLine.delete(transferKey(report.vessel, report.file));
      logger(subject(report.vessel, report.file)).info(deliveredLine(report));
    },
    failed(failure) {
      lastLine.delete(transferKey(failure.vessel, failure.file));
      // Vessel-wide failures are told once per vessel, by vesselChanged.
      if (!failure.vesselWide) {
        logger(subject(failure.vessel, failure.file)).warn(failureLine(failure));
      }
    },
    vesselChanged(change) {
      const line = vesselLine(change, announced.has(change.after.vessel));
      if (change.after.state === "connected") announced.add(change.after.vessel);
      if (line) logger(`vessel "${change.after.vessel}"`)[line.level](line.text);
    },
    processed(directory, relpath, vessels) {
      const reached = vessels.length ? `delivered to ${vessels.join(", ")}` : "delivered";
      logger(`"${directory}/${relpath}"`).info(`${reached}, moved to processed/`);
    },
  };
}

function transferKey(vessel: string, file: FileRecord): string {
  return `${vessel}\0${file.id}`;
}

function subject(vessel: string, file: FileRecord): string {
  return `vessel "${vessel}": "${file.directory}/${file.relpath}"`;
}

/** `45% (460.8 MiB of 1.0 GiB) at 98.2 MiB/s, ETA 6.0 s` */
export function progressLine(progress: TransferProgress, elapsedMs: number): string {
  const { size } = progress.file;
  const percent = size > 0 ? Math.floor((progress.bytesDone / size) * 100) : 100;
  const rate = elapsedMs > 0 ? progress.bytesSent / (elapsedMs / 1000) : 0;
  const eta = rate > 0 ? `ETA ${formatDuration(((size - progress.bytesDone) / rate) * 1000)}` : "";
  return `${percent}% (${formatBytes(progress.bytesDone)} of ${formatBytes(size)}) at ` +
    `${formatRate(rate)}${eta ? `, ${eta}` : ""}`;
}

/** `delivered 1.0 GiB in 8.2 s (125 MiB/s), 3 of 103 parts resumed` */
export function deliveredLine(report: DeliveryReport): string {
  const seconds = report.durationMs / 1000;
  const rate = seconds > 0 ? ` (${formatRate(report.bytesSent / seconds)})` : "";
  const parts = report.partsResumed > 0
    ? `, ${report.partsResumed} of ${report.parts} parts resumed`
    : report.parts > 1
    ? `, ${report.parts} parts`
    : "";
  return `delivered ${formatBytes(report.file.size)} in ${
    formatDuration(report.durationMs)
  }${rate}${parts}`;
}

function failureLine(failure: DeliveryFailure): string {
  return `${failure.message} (retrying in ${retryIn(failure.retryAt)})`;
}

function vesselLine(
  { before, after }: VesselChange,
  announced: boolean,
): { level: "info" | "error"; text: string } | undefined {
  const wasFailing = failing(before);
  if (failing(after)) {
    if (wasFailing && before.lastError === after.lastError) return undefined;
    const operator = after.state === "failing" ? "; needs the operator" : "";
    const verb = wasFailing ? "still failing" : before.state === "connected" ? "lost" : "failing";
    return {
      level: "error",
      text: `${verb}: ${after.lastError}${operator} (retrying in ${retryIn(after.backoffUntil)})`,
    };
  }
  if (after.state !== "connected") return undefined;
  if (wasFailing) {
    const since = before.failingSince ?? after.since ?? Date.now();
    return { level: "info", text: `back after ${formatDuration((after.since ?? 0) - since)}` };
  }
  return announced ? undefined : { level: "info", text: "connected" };
}

function failing(health: VesselHealthRecord): boolean {
  return health.state === "backing-off" || health.state === "failing";
}

function retryIn(at: number | null): string {
  return formatDuration(Math.max(0, (at ?? Date.now()) - Date.now()));
}
