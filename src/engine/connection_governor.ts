/**
 * How many connections a vessel uses, found by trying, as TCP finds its
 * window: on a lossy or long link every TCP stream is slow (its rate falls
 * with the square root of the loss, and with the round trip), and more
 * streams carry more; on a fast link more streams only cost CPU.
 *
 * While parts wait for the window (the vessel has more work than
 * connections), the delivered rate is read over a few seconds (ten round
 * trips at least), at a steady count of open connections and once new
 * streams are past TCP's slow start. A long round trip starts with more
 * connections. The count doubles while each doubling pays (a
 * quarter of the ideal gain at least), and quadruples after one that paid
 * nearly in full (the link is far from full); it falls back to the count
 * before a step that did not pay and holds there a while before it tries
 * again; at the cap it tries half as many, and keeps them if they deliver
 * nearly as much. Streams that each keep much in flight (rate times round
 * trip) share a full link: none are added there; nor beyond the shore's
 * cores on a LAN, where CPU is the limit. Readings are taken only
 * while connections are busy: an idle link says nothing of what more
 * connections would carry.
 */

/**
 * Connections an adaptive vessel starts with: on a clean link the extra ones
 * cost a few logins; on a lossy one every stream carries little, and the
 * first reading comes sooner with more of them. The start logs them all in
 * at once, before the engine loads (wan, 40 ms, 100 x 64 KiB: the last three
 * came up 270 ms after the first when they waited for the engine).
 */
export const FIRST_CONNECTIONS = 4;

/** Tuning of a {@linkcode ConnectionGovernor}. */
export interface GovernorOptions {
  /** The most connections (the vessel's `Connections = auto` cap). */
  readonly max: number;
  /** Connections at first. */
  readonly start: number;
  /**
   * The shore's cores: on a link of under a millisecond no more connections
   * than this are tried (see {@linkcode LAN_ROUND_TRIP_MS}).
   */
  readonly cores?: number;
  /**
   * How long one reading of the rate lasts at least, at a steady count of
   * open connections; ten round trips when that is longer.
   */
  readonly sampleMs?: number;
  /** How long a count found best is kept before the governor tries another. */
  readonly holdMs?: number;
  /** How long a try waits for its new connections to open before it is given up. */
  readonly openWaitMs?: number;
}

/** One reading: the rate `rate` (bytes per ms) with `open` connections. */
interface Reading {
  readonly open: number;
  readonly rate: number;
}

interface Trial {
  readonly from: Reading;
  readonly up: boolean;
  readonly since: number;
}

/** A share of the ideal gain of more connections below which they are not worth it. */
const MIN_GAIN_SHARE = 0.25;
/** Fewer connections are kept when they deliver at least this share of the rate. */
const KEEP_FEWER_SHARE = 0.9;
/** A step that won this share of its ideal gain is followed by a larger one. */
const LINEAR_GAIN_SHARE = 0.75;
/** Round trips one reading lasts at least. */
const SAMPLE_ROUND_TRIPS = 10;
/**
 * Round trips, and milliseconds, skipped after the count of open connections
 * changes: new TCP streams overshoot in slow start before their first loss,
 * and would pass for gains.
 */
const WARMUP_ROUND_TRIPS = 5;
const WARMUP_MS = 500;
/**
 * Each this much of round trip is worth one connection at the start: on a
 * long link every stream takes many round trips to grow back after a loss,
 * and its SSH window caps it at window / round trip, so more streams pay
 * almost surely (measured on the emulated lossy link, 60 ms: 6 at the start
 * delivered 16 MiB in 10.7 s, 4 in 15 s, 2 in 17.7 s); the readings then
 * trim those that do not pay.
 */
const ROUND_TRIP_PER_CONNECTION_MS = 10;
/**
 * Bytes in flight per stream (its rate times the round trip) from which
 * streams are taken to share a full link, and no more are tried: random
 * loss keeps a TCP stream far below this (about 17 KiB at 1 % loss, 40 at
 * 0.2 %), so streams holding more are held back by each other. Measured on
 * the emulated 100 Mbit/s, 40 ms link: 4 streams carried 11.6 MiB/s, about
 * 120 KiB in flight each, and a try of 8 cost the file a second (slow start
 * overflowing the queue, logins losing packets).
 */
const FULL_LINK_STREAM_BYTES = 64 * 1024;
/**
 * Bytes in flight per stream from which it is taken to be held back by its
 * SSH window (2 MiB) and part window instead: there more streams do pay.
 */
const WINDOW_BOUND_STREAM_BYTES = 1024 * 1024;
/**
 * A round trip below which TCP does not hold a stream back (its window
 * refills, and a loss heals, within a few milliseconds; an SSH window of
 * 2 MiB per 5 ms is 400 MiB/s, more than a core encrypts): what more
 * connections add there is CPU, every connection's SSH encrypting on a core
 * of its own. On loopback here (2 cores) 8 connections carried 131 MiB/s
 * where 4 carried 148, and held 15 MiB more memory while tried. The round
 * trip is the quickest SFTP reply, which passes ssh, sshd and sftp-server
 * each way: on 2 busy cores that took 1.1-2.0 ms on loopback, and with a
 * limit of 1 ms the governor tried 8, then 16 connections there (1 GiB in
 * 14.9 s, against 11.1 s with 2).
 */
const LAN_ROUND_TRIP_MS = 5;

/** Decides, reading after reading, how many connections a vessel uses. */
export class ConnectionGovernor {
  readonly #max: number;
  readonly #cores: number;
  readonly #sampleMs: number;
  readonly #holdMs: number;
  readonly #openWaitMs: number;
  #target: number;
  #sample?: {
    readonly at: number;
    readonly bytes: number;
    readonly open: number;
    readonly warming: boolean;
  };
  /** The round trip the start was taken from, once one was known. */
  #startRoundTripMs?: number;
  readonly #start: number;
  #trial?: Trial;
  #holdUntil = 0;
  /** A count a step reached without paying: not tried again until the next hold ends. */
  #noGainAt?: number;
  #lastReading?: { open: number; bytesPerSecond: number };

  constructor(options: GovernorOptions) {
    this.#max = Math.max(1, options.max);
    this.#cores = Math.max(1, options.cores ?? Infinity);
    this.#target = Math.max(1, Math.min(this.#max, options.start));
    this.#start = this.#target;
    this.#sampleMs = options.sampleMs ?? 1_500;
    this.#holdMs = options.holdMs ?? 60_000;
    this.#openWaitMs = options.openWaitMs ?? 30_000;
  }

  /** Connections to use now. */
  get target(): number {
    return this.#target;
  }

  /** The last reading: bytes per second with `open` connections. */
  get lastReading(): { open: number; bytesPerSecond: number } | undefined {
    return this.#lastReading;
  }

  /**
   * Takes the vessel's state at `now`: `bytes` acknowledged so far, whether
   * parts are waiting for the window (`busy`), how many connections are
   * open, and the link's round trip if known. Returns the connections to use
   * from now on.
   */
  tick(now: number, bytes: number, busy: boolean, open: number, roundTripMs = 0): number {
    if (roundTripMs > 0) this.#startFrom(roundTripMs);
    if (!busy || open === 0) {
      this.#sample = undefined;
      return this.#target;
    }
    const sample = this.#sample;
    if (!sample || sample.open !== open || bytes < sample.bytes) {
      this.#sample = { at: now, bytes, open, warming: true };
      this.#waitForOpen(now);
      return this.#target;
    }
    const elapsed = now - sample.at;
    if (sample.warming) {
      if (elapsed >= Math.max(WARMUP_MS, WARMUP_ROUND_TRIPS * roundTripMs)) {
        this.#sample = { at: now, bytes, open, warming: false };
      }
      return this.#target;
    }
    if (elapsed < Math.max(this.#sampleMs, SAMPLE_ROUND_TRIPS * roundTripMs)) return this.#target;
    this.#sample = { at: now, bytes, open, warming: false };
    this.#decide(now, { open, rate: (bytes - sample.bytes) / elapsed }, roundTripMs);
    return this.#target;
  }

  /**
   * Starts with one connection per {@linkcode ROUND_TRIP_PER_CONNECTION_MS}
   * of round trip, once it is known, and on a LAN with no more than the
   * shore's cores. A first figure may be a slow login's
   * estimate (a slow CPU looks like a long link): while nothing has been
   * read or tried, a round trip found less than half of it sets the start
   * again.
   */
  #startFrom(roundTripMs: number): void {
    const started = this.#startRoundTripMs;
    if (started !== undefined && (roundTripMs >= started / 2 || this.#lastReading)) return;
    if (this.#trial) return;
    this.#startRoundTripMs = roundTripMs;
    const byRoundTrip = Math.min(this.#max, Math.round(roundTripMs / ROUND_TRIP_PER_CONNECTION_MS));
    const start = Math.max(started === undefined ? this.#target : this.#start, byRoundTrip);
    // A LAN's limit is the shore's cores from the start (loopback, 2 cores, 1 GiB: 4
    // connections carried 87 MiB/s for the first reading, then 2 carried 133-150).
    this.#target = roundTripMs < LAN_ROUND_TRIP_MS ? Math.min(start, this.#cores) : start;
  }

  /** A trial whose connections never opened (the vessel refuses more) ends where it is. */
  #waitForOpen(now: number): void {
    const trial = this.#trial;
    if (trial && now - trial.since > this.#openWaitMs) {
      this.#trial = undefined;
      this.#holdUntil = now + this.#holdMs;
    }
  }

  #decide(now: number, reading: Reading, roundTripMs: number): void {
    let step = 2;
    this.#lastReading = { open: reading.open, bytesPerSecond: reading.rate * 1000 };
    const trial = this.#trial;
    if (trial) {
      if (reading.open === trial.from.open) return this.#waitForOpen(now);
      this.#trial = undefined;
      const ideal = reading.open / trial.from.open - 1;
      const gain = reading.rate / trial.from.rate - 1;
      const worth = trial.up
        ? gain >= MIN_GAIN_SHARE * ideal
        : reading.rate >= trial.from.rate * KEEP_FEWER_SHARE;
      if (!worth) {
        if (trial.up) this.#noGainAt = reading.open;
        if (trial.up && reading.open > 2 * trial.from.open) {
          // Overshot: the doubling in between may still pay.
          this.#trial = { from: trial.from, up: true, since: now };
          this.#target = 2 * trial.from.open;
          return;
        }
        this.#target = trial.from.open;
        this.#holdUntil = now + this.#holdMs;
        return;
      }
      // Fewer connections did as well: keep them and hold. More did better: try more still.
      if (!trial.up) {
        this.#target = reading.open;
        this.#holdUntil = now + this.#holdMs;
        return;
      }
      if (gain >= LINEAR_GAIN_SHARE * ideal) step = 4;
    }
    if (now < this.#holdUntil) return;
    if (reading.open < this.#target) return; // still opening what was asked for
    const onLan = roundTripMs > 0 && roundTripMs < LAN_ROUND_TRIP_MS;
    const ceiling = onLan ? Math.min(this.#max, this.#cores) : this.#max;
    const up = Math.min(ceiling, this.#target * step);
    if (this.#noGainAt !== undefined && up >= this.#noGainAt) {
      // The step was just tried and did not pay: hold here, and try again after.
      this.#noGainAt = undefined;
      this.#holdUntil = now + this.#holdMs;
    } else if (up > this.#target) {
      if (sharingFullLink(reading, roundTripMs)) {
        // New streams would only overflow the link's queue in their slow start.
        this.#holdUntil = now + this.#holdMs;
        return;
      }
      this.#trial = { from: reading, up: true, since: now };
      this.#target = up;
    } else if (this.#target > 1) {
      this.#trial = { from: reading, up: false, since: now };
      this.#target = Math.ceil(this.#target / 2);
    }
  }
}

/** Whether each stream holds so much in flight that it must be sharing a full link. */
function sharingFullLink(reading: Reading, roundTripMs: number): boolean {
  const inFlight = reading.rate / reading.open * roundTripMs;
  return inFlight >= FULL_LINK_STREAM_BYTES && inFlight < WINDOW_BOUND_STREAM_BYTES;
}
