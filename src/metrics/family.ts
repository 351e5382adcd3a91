/** What counters, gauges and histograms share: a name, help, label names, and series by labels. */
import { checkLabelName, checkMetricName, escapeHelp } from "./exposition.ts";

/** Label values by label name. */
export type Labels = Readonly<Record<string, string>>;

/** One metric family: its series keyed by their label values. */
export abstract class Family<Series> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: "counter" | "gauge" | "histogram";
  readonly #series = new Map<string, { labels: [string, string][]; series: Series }>();

  constructor(name: string, help: string, labelNames: readonly string[]) {
    checkMetricName(name);
    for (const label of labelNames) checkLabelName(label);
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  /** A new, empty series. */
  protected abstract create(): Series;

  /** The sample lines of one series. */
  protected abstract lines(labels: [string, string][], series: Series): string[];

  /** The series for `labels` (every label name of the family, no other), created on first use. */
  protected series(labels: Labels): Series {
    const names = Object.keys(labels);
    if (
      names.length !== this.labelNames.length || !this.labelNames.every((n) => n in labels)
    ) {
      throw new TypeError(
        `Metric "${this.name}" takes labels ${JSON.stringify(this.labelNames)}, ` +
          `got ${JSON.stringify(names)}`,
      );
    }
    const values = this.labelNames.map((label) => labels[label]);
    const key = JSON.stringify(values);
    let entry = this.#series.get(key);
    if (!entry) {
      entry = {
        labels: this.labelNames.map((label, i) => [label, values[i]]),
        series: this.create(),
      };
      this.#series.set(key, entry);
    }
    return entry.series;
  }

  /** Forgets every series (a gauge filled anew on each scrape). */
  reset(): void {
    this.#series.clear();
  }

  /** The family in the text format: HELP, TYPE, then its samples. */
  render(): string[] {
    const out = [
      `# HELP ${this.name} ${escapeHelp(this.help)}`,
      `# TYPE ${this.name} ${this.type}`,
    ];
    for (const { labels, series } of this.#series.values()) out.push(...this.lines(labels, series));
    return out;
  }
}
