/**
 * What the engine tells the outside about its work: deliveries, their
 * progress, vessels coming and going, files reaching processed/. Logs and
 * metrics are observers; the engine knows neither.
 */
import type { FileRecord, VesselHealthRecord } from "../store/store.ts";

/** Where one delivery attempt stands, after each part that became whole. */
export interface TransferProgress {
  readonly vessel: string;
  readonly file: FileRecord;
  /** When this attempt started (ms since the epoch). */
  readonly startedAt: number;
  /** Bytes on the vessel: parts resumed and parts sent by this attempt. */
  readonly bytesDone: number;
  /** Bytes this attempt sent. */
  readonly bytesSent: number;
}

/** A delivery that ended with a verified copy on its vessel. */
export interface DeliveryReport {
  readonly vessel: string;
  readonly file: FileRecord;
  /** How long the successful attempt took. */
  readonly durationMs: number;
  /** Bytes the successful attempt sent (the file less its resumed parts). */
  readonly bytesSent: number;
  readonly parts: number;
  /** Parts already whole on the vessel when the attempt began. */
  readonly partsResumed: number;
}

/** A delivery attempt that failed; it is tried again later. */
export interface DeliveryFailure {
  readonly vessel: string;
  readonly file: FileRecord;
  /** The transport's error code (`connection`, `no-space`...), or `other`. */
  readonly code: string;
  readonly message: string;
  /** Whether the vessel, not the file, failed (connection, disk full...). */
  readonly vesselWide: boolean;
  /** When the delivery is tried again. */
  readonly retryAt: number;
}

/** A vessel's health moved from one state to another. */
export interface VesselChange {
  readonly before: VesselHealthRecord;
  readonly after: VesselHealthRecord;
}

/** Hooks the engine calls; each is optional and must not throw. */
export interface EngineObserver {
  /** A part became whole on the vessel (called once per part). */
  progress?(progress: TransferProgress): void;
  /** Bytes of a part reached the vessel (counted once the part is whole). */
  sent?(vessel: string, directory: string, bytes: number): void;
  /** A part went out again: an earlier upload of it was cut or lost by the vessel. */
  resent?(vessel: string, directory: string): void;
  delivered?(report: DeliveryReport): void;
  failed?(failure: DeliveryFailure): void;
  vesselChanged?(change: VesselChange): void;
  /** A source file moved to processed/ after reaching `vessels`. */
  processed?(directory: string, relpath: string, vessels: readonly string[]): void;
}

/** One observer that passes every call on to each of `observers`. */
export function fanOut(...observers: EngineObserver[]): EngineObserver {
  return {
    progress: (progress) => observers.forEach((o) => o.progress?.(progress)),
    sent: (vessel, directory, bytes) =>
      observers.forEach((o) => o.sent?.(vessel, directory, bytes)),
    resent: (vessel, directory) => observers.forEach((o) => o.resent?.(vessel, directory)),
    delivered: (report) => observers.forEach((o) => o.delivered?.(report)),
    failed: (failure) => observers.forEach((o) => o.failed?.(failure)),
    vesselChanged: (change) => observers.forEach((o) => o.vesselChanged?.(change)),
    processed: (directory, relpath, vessels) =>
      observers.forEach((o) => o.processed?.(directory, relpath, vessels)),
  };
}
