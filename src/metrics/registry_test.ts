import assert from "node:assert/strict";
import { parsePrometheusText, sampleValue } from "../../tests/prometheus_text.ts";
import { Registry } from "./registry.ts";

Deno.test("Registry.render() writes counters, gauges and histograms a strict parser reads back", () => {
  const registry = new Registry();
  const sent = registry.counter("t_sent_bytes_total", "Bytes sent.\nSecond line.", ["vessel"]);
  const depth = registry.gauge("t_queued_files", "Files queued.", ["vessel", "directory"]);
  const duration = registry.histogram("t_duration_seconds", "Durations.", ["vessel"], [0.5, 1, 5]);
  const hostile = 'v "1"\\\nx';
  sent.inc({ vessel: hostile }, 1000);
  sent.inc({ vessel: hostile }, 24);
  sent.touch({ vessel: "idle" });
  let scrapes = 0;
  registry.collect(() => depth.set({ vessel: "a", directory: "out" }, ++scrapes));
  for (const seconds of [0.2, 0.7, 0.9, 3, 60]) duration.observe({ vessel: "a" }, seconds);

  const families = parsePrometheusText(registry.render());
  assert.equal(families.get("t_sent_bytes_total")?.help, "Bytes sent.\nSecond line.");
  assert.equal(sampleValue(families, "t_sent_bytes_total", { vessel: hostile }), 1024);
  assert.equal(sampleValue(families, "t_sent_bytes_total", { vessel: "idle" }), 0);
  assert.equal(sampleValue(families, "t_queued_files", { vessel: "a", directory: "out" }), 1);
  const bucket = (le: string) =>
    sampleValue(families, "t_duration_seconds_bucket", { vessel: "a", le });
  assert.deepEqual(["0.5", "1", "5", "+Inf"].map(bucket), [1, 3, 4, 5]);
  assert.equal(sampleValue(families, "t_duration_seconds_sum", { vessel: "a" }), 64.8);
  assert.equal(
    sampleValue(parsePrometheusText(registry.render()), "t_queued_files", {
      vessel: "a",
      directory: "out",
    }),
    2,
    "collectors run at each scrape",
  );
});

Deno.test("Registry refuses bad names, wrong labels and a counter going down", () => {
  const registry = new Registry();
  assert.throws(() => registry.counter("1bad", "x"), TypeError);
  assert.throws(() => registry.gauge("ok", "x", ["__reserved"]), TypeError);
  assert.throws(() => registry.histogram("h", "x", ["le"], [1]), TypeError);
  assert.throws(() => registry.histogram("h2", "x", [], [2, 1]), RangeError);
  const counter = registry.counter("c_total", "x", ["vessel"]);
  assert.throws(() => registry.counter("c_total", "x"), /registered twice/);
  assert.throws(() => counter.inc({ vessel: "a" }, -1), RangeError);
  assert.throws(() => counter.inc({ other: "a" }), /takes labels \["vessel"\]/);
});
