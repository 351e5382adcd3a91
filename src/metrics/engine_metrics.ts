/**
 * ContentMonster's metrics: counters fed by the engine's observer hooks,
 * gauges read from the engine and the store at each scrape. Each is
 * documented in the README ("Metrics").
 */
import type { EngineObserver } from "../engine/observer.ts";
import type { QueueStatus, VesselHealthRecord, VesselState } from "../store/store.ts";
import { Registry } from "./registry.ts";

/** What the gauges are read from at each scrape. */
export interface MetricsSources {
  /** Each vessel's health and deliveries in flight. */
  activity(): readonly { readonly health: VesselHealthRecord; readonly inFlight: number }[];
  /** The queue per directory and vessel. */
  queue(): readonly QueueStatus[];
}

/** Which vessels take which directories, so every series exists from the first scrape. */
export interface MetricsLayout {
  readonly vessels: readonly { readonly name: string; readonly ignoreDirs: readonly string[] }[];
  readonly directories: readonly { readonly name: string }[];
}

/** Upper bounds of the delivery duration buckets, in seconds. */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
const STATES: readonly VesselState[] = ["idle", "connected", "backing-off", "failing"];

/** The registry with every family, and the observer that feeds the counters. */
export function engineMetrics(
  layout: MetricsLayout,
): { registry: Registry; observer: EngineObserver; readFrom(sources: MetricsSources): void } {
  const registry = new Registry();
  const deliveredBytes = registry.counter(
    "contentmonster_delivered_bytes_total",
    "Bytes of files delivered and verified on the vessel.",
    ["vessel", "directory"],
  );
  const deliveredFiles = registry.counter(
    "contentmonster_delivered_files_total",
    "Files delivered and verified on the vessel.",
    ["vessel", "directory"],
  );
  const sentBytes = registry.counter(
    "contentmonster_sent_bytes_total",
    "Bytes uploaded to the vessel in whole parts, resends included.",
    ["vessel", "directory"],
  );
  const resentParts = registry.counter(
    "contentmonster_parts_resent_total",
    "Parts of multi-part files uploaded again: an earlier upload was cut or the vessel lost it.",
    ["vessel", "directory"],
  );
  const failures = registry.counter(
    "contentmonster_delivery_failures_total",
    "Failed delivery attempts by error code (connection, no-space, auth, host-key, ...).",
    ["vessel", "code"],
  );
  const processed = registry.counter(
    "contentmonster_processed_files_total",
    "Source files moved to processed/ after every vessel held them.",
    ["directory"],
  );
  const duration = registry.histogram(
    "contentmonster_delivery_duration_seconds",
    "Time of the successful attempt of each delivery, from start to publish.",
    ["vessel"],
    DURATION_BUCKETS,
  );
  const queuedFiles = registry.gauge(
    "contentmonster_queued_files",
    "Files waiting for delivery to the vessel (in progress included).",
    ["vessel", "directory"],
  );
  const queuedBytes = registry.gauge(
    "contentmonster_queued_bytes",
    "Bytes of the files waiting for delivery to the vessel.",
    ["vessel", "directory"],
  );
  const inFlight = registry.gauge(
    "contentmonster_deliveries_in_flight",
    "Deliveries running now.",
    ["vessel"],
  );
  const up = registry.gauge(
    "contentmonster_vessel_up",
    "1 unless the vessel is backing off or failing after a vessel-wide error.",
    ["vessel"],
  );
  const state = registry.gauge(
    "contentmonster_vessel_state",
    "1 for the vessel's current state (idle, connected, backing-off, failing), else 0.",
    ["vessel", "state"],
  );
  const sinceSuccess = registry.gauge(
    "contentmonster_last_delivery_age_seconds",
    "Seconds since the last delivery to the vessel was verified (absent before the first).",
    ["vessel"],
  );

  for (const vessel of layout.vessels) {
    duration.touch({ vessel: vessel.name });
    for (const directory of layout.directories) {
      if (vessel.ignoreDirs.includes(directory.name)) continue;
      const labels = { vessel: vessel.name, directory: directory.name };
      for (const counter of [deliveredBytes, deliveredFiles, sentBytes, resentParts]) {
        counter.touch(labels);
      }
    }
  }
  for (const directory of layout.directories) processed.touch({ directory: directory.name });

  const observer: EngineObserver = {
    sent: (vessel, directory, bytes) => sentBytes.inc({ vessel, directory }, bytes),
    resent: (vessel, directory) => resentParts.inc({ vessel, directory }),
    delivered: (report) => {
      const labels = { vessel: report.vessel, directory: report.file.directory };
      deliveredBytes.inc(labels, report.file.size);
      deliveredFiles.inc(labels);
      duration.observe({ vessel: report.vessel }, report.durationMs / 1000);
    },
    failed: (failure) => failures.inc({ vessel: failure.vessel, code: failure.code }),
    processed: (directory) => processed.inc({ directory }),
  };

  function readFrom(sources: MetricsSources): void {
    registry.collect(() => {
      const now = Date.now();
      for (const family of [inFlight, up, state, sinceSuccess, queuedFiles, queuedBytes]) {
        family.reset();
      }
      for (const { health, inFlight: running } of sources.activity()) {
        const vessel = health.vessel;
        inFlight.set({ vessel }, running);
        up.set({ vessel }, health.state === "backing-off" || health.state === "failing" ? 0 : 1);
        for (const name of STATES) {
          state.set({ vessel, state: name }, name === health.state ? 1 : 0);
        }
        if (health.lastSuccessAt !== null) {
          sinceSuccess.set({ vessel }, Math.max(0, (now - health.lastSuccessAt) / 1000));
        }
      }
      for (const vessel of layout.vessels) {
        for (const directory of layout.directories) {
          if (vessel.ignoreDirs.includes(directory.name)) continue;
          const labels = { vessel: vessel.name, directory: directory.name };
          queuedFiles.set(labels, 0);
          queuedBytes.set(labels, 0);
        }
      }
      for (const row of sources.queue()) {
        const labels = { vessel: row.vessel, directory: row.directory };
        queuedFiles.set(labels, row.queuedFiles);
        queuedBytes.set(labels, row.queuedBytes);
      }
    });
  }

  return { registry, observer, readFrom };
}
