/**
 * How many connections a vessel uses, found by trying, as TCP finds its
 * window: on a lossy or long link every TCP stream is slow (its rate falls
 * with the square root of the loss, and with the round trip), and more
 * streams carry more; on a fast link more streams only cost CPU.
 *
 * While parts wait for the window (the vessel has more work than
 * connections), the delivered rate is read over a few seconds at a steady
 * count of open connections. The count doubles while each doubling pays (a
 * quarter of the ideal gain at least), falls back to the count before a
 * doubling that did not, and holds there a while before it tries again; at
 * the cap it tries half as many, and keeps them if they deliver nearly as
 * much. Readings are taken only while connections are busy: an idle link
 * says nothing of what more connections would carry.
 */

/** Tuning of a {@linkcode ConnectionGovernor}. */
export interface GovernorOptions {
  /** The most connections (the vessel's `Connections = auto` cap). */
  readonly max: number;
  /** Connections at first. */
  readonly start: number;
  /** How long one reading of the rate lasts, at a steady count of open connections. */
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

/** Decides, reading after reading, how many connections a vessel uses. */
export class ConnectionGovernor {
  readonly #max: number;
  readonly #sampleMs: number;
  readonly #holdMs: number;
  readonly #openWaitMs: number;
  #target: number;
  #sample?: { readonly at: number; readonly bytes: number; readonly open: number };
  #trial?: Trial;
  #holdUntil = 0;

  constructor(options: GovernorOptions) {
    this.#max = Math.max(1, options.max);
    this.#target = Math.max(1, Math.min(this.#max, options.start));
    this.#sampleMs = options.sampleMs ?? 3_000;
    this.#holdMs = options.holdMs ?? 60_000;
    this.#openWaitMs = options.openWaitMs ?? 30_000;
  }

  /** Connections to use now. */
  get target(): number {
    return this.#target;
  }

  /**
   * Takes the vessel's state at `now`: `bytes` acknowledged so far, whether
   * parts are waiting for the window (`busy`), and how many connections are
   * open. Returns the connections to use from now on.
   */
  tick(now: number, bytes: number, busy: boolean, open: number): number {
    if (!busy || open === 0) {
      this.#sample = undefined;
      return this.#target;
    }
    const sample = this.#sample;
    if (!sample || sample.open !== open || bytes < sample.bytes) {
      this.#sample = { at: now, bytes, open };
      this.#waitForOpen(now);
      return this.#target;
    }
    if (now - sample.at < this.#sampleMs) return this.#target;
    this.#sample = { at: now, bytes, open };
    this.#decide(now, { open, rate: (bytes - sample.bytes) / (now - sample.at) });
    return this.#target;
  }

  /** A trial whose connections never opened (the vessel refuses more) ends where it is. */
  #waitForOpen(now: number): void {
    const trial = this.#trial;
    if (trial && now - trial.since > this.#openWaitMs) {
      this.#trial = undefined;
      this.#holdUntil = now + this.#holdMs;
    }
  }

  #decide(now: number, reading: Reading): void {
    const trial = this.#trial;
    if (trial) {
      if (reading.open === trial.from.open) return this.#waitForOpen(now);
      this.#trial = undefined;
      const worth = trial.up
        ? reading.rate >= trial.from.rate *
            (1 + MIN_GAIN_SHARE * (reading.open / trial.from.open - 1))
        : reading.rate >= trial.from.rate * KEEP_FEWER_SHARE;
      if (!worth) {
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
    }
    if (now < this.#holdUntil) return;
    if (reading.open < this.#target) return; // still opening what was asked for
    if (this.#target < this.#max) {
      this.#trial = { from: reading, up: true, since: now };
      this.#target = Math.min(this.#max, this.#target * 2);
    } else if (this.#target > 1) {
      this.#trial = { from: reading, up: false, since: now };
      this.#target = Math.ceil(this.#target / 2);
    }
  }
}
