/**
 * A strict parser of the Prometheus text exposition format (0.0.4), for
 * tests: it throws on anything a scraper could misread, so a test that
 * parses our `/metrics` proves the format, not just the numbers.
 *
 * Checked: `# HELP` and `# TYPE` at most once per family, TYPE before its
 * samples, each family's lines in one group; metric and label names; label
 * value escapes (`\\`, `\"`, `\n` only); values (floats, `+Inf`, `-Inf`,
 * `NaN`); every sample belongs to a declared family (`_bucket`, `_sum`,
 * `_count` for histograms); no series twice; counters not negative;
 * histogram buckets ascending by `le`, cumulative, ending at `+Inf` equal
 * to `_count`, with a `_sum`.
 *
 * @module
 */

/** One sample line. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** One metric family with its samples. */
export interface MetricFamily {
  readonly name: string;
  readonly type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  readonly help: string | undefined;
  readonly samples: Sample[];
}

type Mutable = { -readonly [K in keyof MetricFamily]: MetricFamily[K] } & { typed: boolean };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** Parses `text`; throws an `Error` naming the line of the first problem. */
export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  if (text !== "" && !text.endsWith("\n")) {
    throw new Error("the exposition must end with a newline");
  }
  const families = new Map<string, Mutable>();
  const closed = new Set<string>();
  let current: string | undefined;
  const seen = new Set<string>();
  const lines = text === "" ? [] : text.slice(0, -1).split("\n");

  const enter = (family: string, line: number) => {
    if (current === family) return;
    if (closed.has(family)) {
      throw new Error(`line ${line}: lines of "${family}" are not in one group`);
    }
    if (current !== undefined) closed.add(current);
    current = family;
  };

  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") throw new Error(`line ${line}: empty line`);
    if (raw.startsWith("#")) {
      const match = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(raw);
      if (!match) return; // a plain comment
      const [, keyword, name, rest = ""] = match;
      if (METRIC_NAME.exec(name)?.[0] !== name) {
        throw new Error(`line ${line}: bad metric name "${name}"`);
      }
      enter(name, line);
      let family = families.get(name);
      family ??= { name, type: "untyped", typed: false, help: undefined, samples: [] };
      families.set(name, family);
      if (keyword === "TYPE") {
        if (family.typed) throw new Error(`line ${line}: second TYPE of "${name}"`);
        if (!TYPES.has(rest)) throw new Error(`line ${line}: unknown type "${rest}"`);
        family.type = rest as MetricFamily["type"];
        family.typed = true;
        return;
      }
      if (family.help !== undefined) throw new Error(`line ${line}: second HELP of "${name}"`);
      if (/\\[^\\n]|\\$/.test(rest)) throw new Error(`line ${line}: bad escape in HELP`);
      family.help = rest.replaceAll("\\n", "\n").replaceAll("\\\\", "\\");
      return;
    }
    const sample = parseSample(raw, line);
    const family = familyOf(sample.name, families);
    if (!family?.typed) {
      throw new Error(`line ${line}: sample "${sample.name}" has no declared family (# TYPE)`);
    }
    enter(family.name, line);
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seen.has(key)) throw new Error(`line ${line}: series ${key} appears twice`);
    seen.add(key);
    if (family.type === "counter" && !(sample.value >= 0)) {
      throw new Error(`line ${line}: counter "${sample.name}" is ${sample.value}`);
    }
    if (family.type === "histogram" && sample.name === `${family.name}_bucket`) {
      if (!("le" in sample.labels)) throw new Error(`line ${line}: bucket without "le"`);
    }
    family.samples.push(sample);
  });
  for (const family of families.values()) {
    if (family.type === "histogram") checkHistogram(family);
  }
  return families;
}

/** The family a sample name belongs to: its own name, or a histogram's/summary's suffixed one. */
function familyOf(name: string, families: Map<string, Mutable>): Mutable | undefined {
  const own = families.get(name);
  if (own && own.type !== "histogram") return own;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const family = families.get(name.slice(0, -suffix.length));
    if (family?.type === "histogram" || family?.type === "summary" && suffix !== "_bucket") {
      return family;
    }
  }
  return undefined;
}

function parseSample(raw: string, line: number): Sample {
  const name = METRIC_NAME.exec(raw)?.[0];
  if (!name) throw new Error(`line ${line}: no metric name in ${JSON.stringify(raw)}`);
  let rest = raw.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    rest = rest.slice(1);
    while (!rest.startsWith("}")) {
      const label = LABEL_NAME.exec(rest)?.[0];
      if (!label) throw new Error(`line ${line}: bad label name in ${JSON.stringify(raw)}`);
      if (label in labels) throw new Error(`line ${line}: label "${label}" twice`);
      rest = rest.slice(label.length);
      if (!rest.startsWith('="')) throw new Error(`line ${line}: expected =" after "${label}"`);
      rest = rest.slice(2);
      let value = "";
      for (;;) {
        if (rest === "") throw new Error(`line ${line}: unterminated label value`);
        const c = rest[0];
        if (c === '"') break;
        if (c === "\\") {
          const next = rest[1];
          if (next === "\\" || next === '"') value += next;
          else if (next === "n") value += "\n";
          else throw new Error(`line ${line}: bad escape \\${next ?? ""} in a label value`);
          rest = rest.slice(2);
          continue;
        }
        value += c;
        rest = rest.slice(1);
      }
      labels[label] = value;
      rest = rest.slice(1);
      if (rest.startsWith(",")) rest = rest.slice(1);
      else if (!rest.startsWith("}")) {
        throw new Error(`line ${line}: expected , or } after a label`);
      }
    }
    rest = rest.slice(1);
  }
  const match = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
  if (!match) {
    throw new Error(`line ${line}: expected " VALUE [TIMESTAMP]" in ${JSON.stringify(raw)}`);
  }
  return { name, labels, value: parseValue(match[1], line) };
}

function parseValue(text: string, line: number): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`line ${line}: "${text}" is not a number`);
  }
  return Number(text);
}

function checkHistogram(family: MetricFamily): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let entry = series.get(key);
    if (!entry) series.set(key, entry = { buckets: [] });
    if (sample.name.endsWith("_bucket")) entry.buckets.push([parseValue(le, 0), sample.value]);
    else if (sample.name.endsWith("_sum")) entry.sum = sample.value;
    else entry.count = sample.value;
  }
  for (const [key, { buckets, sum, count }] of series) {
    const where = `histogram "${family.name}" ${key}`;
    if (sum === undefined || count === undefined) {
      throw new Error(`${where}: _sum or _count missing`);
    }
    if (buckets.at(-1)?.[0] !== Infinity) throw new Error(`${where}: no +Inf bucket last`);
    buckets.forEach(([le, value], i) => {
      if (i === 0) return;
      const [previousLe, previous] = buckets[i - 1];
      if (!(le > previousLe)) throw new Error(`${where}: le ${le} does not ascend`);
      if (value < previous) throw new Error(`${where}: bucket le=${le} is not cumulative`);
    });
    if (buckets.at(-1)![1] !== count) {
      throw new Error(`${where}: +Inf bucket ${buckets.at(-1)![1]} differs from _count ${count}`);
    }
  }
}

/** The value of the sample `name` with exactly `labels`, or `undefined`. */
export function sampleValue(
  families: Map<string, MetricFamily>,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name !== name) continue;
      const keys = Object.keys(sample.labels);
      if (keys.length !== Object.keys(labels).length) continue;
      if (keys.every((key) => sample.labels[key] === labels[key])) return sample.value;
    }
  }
  return undefined;
}
