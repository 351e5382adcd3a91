/** A histogram: observations counted into cumulative buckets, with their sum and count. */
import { formatValue, sampleLine } from "./exposition.ts";
import { Family, type Labels } from "./family.ts";

interface Series {
  /** Observations per bucket (not cumulative); the last is above every bound. */
  readonly counts: number[];
  sum: number;
  count: number;
}

/** A family of histograms with the same bucket bounds. */
export class Histogram extends Family<Series> {
  readonly type = "histogram";
  readonly #bounds: readonly number[];

  /** `bounds` are the buckets' upper bounds, ascending; `+Inf` is added. */
  constructor(name: string, help: string, labelNames: readonly string[], bounds: number[]) {
    super(name, help, labelNames);
    if (labelNames.includes("le")) throw new TypeError(`Histogram "${name}" cannot use label "le"`);
    if (bounds.some((bound, i) => i > 0 && bound <= bounds[i - 1])) {
      throw new RangeError(`Histogram "${name}" bounds must ascend: ${bounds.join(", ")}`);
    }
    this.#bounds = bounds;
  }

  protected create(): Series {
    return { counts: new Array(this.#bounds.length + 1).fill(0), sum: 0, count: 0 };
  }

  protected lines(labels: [string, string][], series: Series): string[] {
    const out: string[] = [];
    let cumulative = 0;
    for (let i = 0; i <= this.#bounds.length; i++) {
      cumulative += series.counts[i];
      const le = i < this.#bounds.length ? formatValue(this.#bounds[i]) : "+Inf";
      out.push(sampleLine(`${this.name}_bucket`, [...labels, ["le", le]], cumulative));
    }
    out.push(sampleLine(`${this.name}_sum`, labels, series.sum));
    out.push(sampleLine(`${this.name}_count`, labels, series.count));
    return out;
  }

  /** Counts one observation of `value` in the series of `labels`. */
  observe(labels: Labels, value: number): void {
    const series = this.series(labels);
    let bucket = this.#bounds.findIndex((bound) => value <= bound);
    if (bucket < 0) bucket = this.#bounds.length;
    series.counts[bucket]++;
    series.sum += value;
    series.count++;
  }

  /** Makes the series of `labels` exist with no observations. */
  touch(labels: Labels): void {
    this.series(labels);
  }
}
