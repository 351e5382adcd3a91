/** The metrics one process exposes, rendered for a scrape. */
import { Counter } from "./counter.ts";
import type { Family } from "./family.ts";
import { Gauge } from "./gauge.ts";
import { Histogram } from "./histogram.ts";

/** Holds metric families; collectors refresh pulled values just before each scrape. */
export class Registry {
  readonly #families: Family<unknown>[] = [];
  readonly #collectors: (() => void)[] = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  histogram(
    name: string,
    help: string,
    labelNames: readonly string[],
    bounds: number[],
  ): Histogram {
    return this.#add(new Histogram(name, help, labelNames, bounds));
  }

  /** Runs `collect` before each scrape (to set gauges read from elsewhere). */
  collect(collect: () => void): void {
    this.#collectors.push(collect);
  }

  /** Every family in the text exposition format, in registration order. */
  render(): string {
    for (const collect of this.#collectors) collect();
    return this.#families.flatMap((family) => family.render()).join("\n") + "\n";
  }

  #add<T extends Family<unknown>>(family: T): T {
    if (this.#families.some((other) => other.name === family.name)) {
      throw new TypeError(`Metric "${family.name}" is registered twice`);
    }
    this.#families.push(family);
    return family;
  }
}
