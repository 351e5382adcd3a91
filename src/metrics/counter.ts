/** A counter: a value that only goes up (`..._total`). */
import { sampleLine } from "./exposition.ts";
import { Family, type Labels } from "./family.ts";

/** A family of counters. */
export class Counter extends Family<{ value: number }> {
  readonly type = "counter";

  protected create(): { value: number } {
    return { value: 0 };
  }

  protected lines(labels: [string, string][], series: { value: number }): string[] {
    return [sampleLine(this.name, labels, series.value)];
  }

  /** Adds `by` (default 1, never negative) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`Counter "${this.name}" cannot go down by ${by}`);
    this.series(labels).value += by;
  }

  /** Makes the series of `labels` exist at 0, so a scrape shows it before anything happened. */
  touch(labels: Labels = {}): void {
    this.series(labels);
  }
}
