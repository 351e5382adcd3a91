/**
 * The Prometheus text exposition format (version 0.0.4): escaping and one
 * sample line. https://prometheus.io/docs/instrumenting/exposition_formats/
 */

/** The content type a scrape answers with. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Throws a `TypeError` unless `name` is a valid metric name. */
export function checkMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new TypeError(`Invalid metric name "${name}"`);
}

/** Throws a `TypeError` unless `name` is a valid label name (not reserved with `__`). */
export function checkLabelName(name: string): void {
  if (!LABEL_NAME.test(name) || name.startsWith("__")) {
    throw new TypeError(`Invalid label name "${name}"`);
  }
}

/** A label value with `\`, `"` and newlines escaped. */
export function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** HELP text with `\` and newlines escaped. */
export function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** A sample value: integers as such, `+Inf`, `-Inf`, `NaN`. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** One sample line: `name{a="x",b="y"} 3`. */
export function sampleLine(
  name: string,
  labels: ReadonlyArray<readonly [string, string]>,
  value: number,
): string {
  const set = labels.length
    ? `{${labels.map(([label, v]) => `${label}="${escapeLabelValue(v)}"`).join(",")}}`
    : "";
  return `${name}${set} ${formatValue(value)}`;
}
