/** A gauge: a value that goes up and down. */
import { sampleLine } from "./exposition.ts";
import { Family, type Labels } from "./family.ts";

/** A family of gauges. */
export class Gauge extends Family<{ value: number }> {
  readonly type = "gauge";

  protected create(): { value: number } {
    return { value: 0 };
  }

  protected lines(labels: [string, string][], series: { value: number }): string[] {
    return [sampleLine(this.name, labels, series.value)];
  }

  /** Sets the series of `labels` to `value`. */
  set(labels: Labels, value: number): void {
    this.series(labels).value = value;
  }
}
