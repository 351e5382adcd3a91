/**
 * A vessel's health as its worker sees it: the state `status` shows, when it
 * began, the last error and success, and the bytes of the last minute.
 */
import type { VesselHealthRecord, VesselState } from "../store/store.ts";
import { Throughput } from "./throughput.ts";

/** Tracks one vessel's health; `onChange` hears every change of state. */
export class VesselHealth {
  readonly #throughput = new Throughput();
  readonly #onChange: (before: VesselHealthRecord, after: VesselHealthRecord) => void;
  #record: VesselHealthRecord;

  constructor(
    vessel: string,
    onChange: (before: VesselHealthRecord, after: VesselHealthRecord) => void,
    { now = Date.now(), lastSuccessAt = null }: {
      now?: number;
      /** The last success an earlier run recorded, so a restart does not forget it. */
      lastSuccessAt?: number | null;
    } = {},
  ) {
    this.#onChange = onChange;
    this.#record = {
      vessel,
      state: "idle",
      since: now,
      backoffUntil: null,
      lastError: null,
      failingSince: null,
      lastSuccessAt,
      bytesPerSecond: 0,
      updatedAt: now,
    };
  }

  get state(): VesselState {
    return this.#record.state;
  }

  /** The record as of `now`, with the throughput of the minute before it. */
  snapshot(now = Date.now()): VesselHealthRecord {
    return {
      ...this.#record,
      bytesPerSecond: Math.round(this.#throughput.rate(now)),
      updatedAt: now,
    };
  }

  /** The vessel took `bytes` (a whole part): it works. */
  sent(bytes: number, now = Date.now()): void {
    this.#throughput.add(bytes, now);
    this.#working(now, false);
  }

  /** A delivery to the vessel was verified. */
  delivered(now = Date.now()): void {
    this.#working(now, true);
  }

  /** A vessel-wide failure: nothing is tried before `until`. */
  failed(error: string, until: number, needsOperator: boolean, now = Date.now()): void {
    this.#set({
      state: needsOperator ? "failing" : "backing-off",
      since: this.#failing() ? this.#record.since : now,
      backoffUntil: until,
      lastError: error,
      failingSince: this.#record.failingSince ?? now,
    }, now);
  }

  /** Nothing is running or due: a working vessel becomes idle. */
  quiet(now = Date.now()): void {
    if (this.#record.state === "connected") this.#set({ state: "idle", since: now }, now);
  }

  #failing(): boolean {
    return this.#record.state === "backing-off" || this.#record.state === "failing";
  }

  #working(now: number, success: boolean): void {
    const lastSuccessAt = success ? now : this.#record.lastSuccessAt;
    if (this.#record.state === "connected") {
      this.#record = { ...this.#record, lastSuccessAt };
      return;
    }
    this.#set({
      state: "connected",
      since: now,
      backoffUntil: null,
      lastError: null,
      failingSince: null,
      lastSuccessAt,
    }, now);
  }

  #set(fields: Partial<VesselHealthRecord>, now: number): void {
    const before = this.snapshot(now);
    this.#record = { ...this.#record, ...fields };
    this.#onChange(before, this.snapshot(now));
  }
}
