/**
 * One delivery attempt as observers see it: what it planned, what it sent,
 * which parts went out a second time.
 */
import type { DeliveryRecord } from "../store/store.ts";
import type { DeliveryProgress } from "./delivery.ts";
import type { DeliveryReport, EngineObserver } from "./observer.ts";
import type { VesselHealth } from "./vessel_health.ts";

/** Tracks one attempt and passes its progress on to the observer and the vessel's health. */
export class Transfer implements DeliveryProgress {
  readonly startedAt = Date.now();
  readonly #delivery: DeliveryRecord;
  readonly #observer: EngineObserver;
  readonly #health: VesselHealth;
  /** Parts of this delivery sent by earlier attempts in this process, shared between attempts. */
  readonly #sentBefore: Set<number>;
  #parts = 0;
  #resumed = 0;
  #resumedBytes = 0;
  #bytesSent = 0;

  constructor(
    delivery: DeliveryRecord,
    observer: EngineObserver,
    health: VesselHealth,
    sentBefore: Set<number>,
  ) {
    this.#delivery = delivery;
    this.#observer = observer;
    this.#health = health;
    this.#sentBefore = sentBefore;
  }

  planned(parts: number, present: ReadonlySet<number>, partSize: number): void {
    this.#parts = parts;
    this.#resumed = present.size;
    const { size } = this.#delivery.file;
    this.#resumedBytes = 0;
    for (const index of present) {
      this.#resumedBytes += Math.max(0, Math.min(partSize, size - index * partSize));
    }
  }

  sending(index: number): void {
    if (this.#sentBefore.has(index)) {
      this.#observer.resent?.(this.#delivery.vessel, this.#delivery.file.directory);
    }
    this.#sentBefore.add(index);
  }

  sent(index: number, bytes: number): void {
    const { vessel, file } = this.#delivery;
    this.#sentBefore.add(index);
    this.#bytesSent += bytes;
    this.#health.sent(bytes);
    this.#observer.sent?.(vessel, file.directory, bytes);
    this.#observer.progress?.({
      vessel,
      file,
      startedAt: this.startedAt,
      bytesDone: this.#resumedBytes + this.#bytesSent,
      bytesSent: this.#bytesSent,
    });
  }

  /** The report of this attempt once it delivered the file. */
  report(now = Date.now()): DeliveryReport {
    return {
      vessel: this.#delivery.vessel,
      file: this.#delivery.file,
      durationMs: now - this.startedAt,
      bytesSent: this.#bytesSent,
      parts: this.#parts,
      partsResumed: this.#resumed,
    };
  }
}
