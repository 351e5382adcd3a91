/** The strict exposition parser refuses what a scraper could misread. */
import assert from "node:assert/strict";
import { parsePrometheusText, sampleValue } from "./prometheus_text.ts";

const GOOD = `# HELP jobs_total Jobs done.
# TYPE jobs_total counter
jobs_total{queue="a \\"q\\"\\\\x\\ny"} 3
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.5"} 1
latency_seconds_bucket{le="1"} 2
latency_seconds_bucket{le="+Inf"} 3
latency_seconds_sum 4.5
latency_seconds_count 3
`;

Deno.test("parsePrometheusText() reads families, escaped labels and histograms", () => {
  const families = parsePrometheusText(GOOD);
  assert.deepEqual([...families.keys()], ["jobs_total", "latency_seconds"]);
  assert.equal(families.get("jobs_total")?.help, "Jobs done.");
  assert.equal(sampleValue(families, "jobs_total", { queue: 'a "q"\\x\ny' }), 3);
  assert.equal(sampleValue(families, "latency_seconds_count", {}), 3);
});

Deno.test("parsePrometheusText() rejects malformed expositions", () => {
  const bad: Record<string, string> = {
    "no TYPE": "jobs_total 1\n",
    "undeclared family": "# TYPE a counter\nb 1\n",
    "TYPE twice": "# TYPE a counter\n# TYPE a counter\na 1\n",
    "HELP twice": "# HELP a x\n# HELP a y\n# TYPE a gauge\na 1\n",
    "split group": "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n",
    "bad label name": '# TYPE a gauge\na{1x="v"} 1\n',
    "bad escape": '# TYPE a gauge\na{x="\\t"} 1\n',
    "unterminated": '# TYPE a gauge\na{x="v} 1\n',
    "duplicate label": '# TYPE a gauge\na{x="1",x="2"} 1\n',
    "duplicate series": '# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',
    "bad value": "# TYPE a gauge\na one\n",
    "negative counter": "# TYPE a_total counter\na_total -1\n",
    "no final newline": "# TYPE a gauge\na 1",
    "empty line": "# TYPE a gauge\n\na 1\n",
    "bucket not cumulative": '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n' +
      "h_sum 1\nh_count 1\n",
    "+Inf differs from _count": '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n',
    "no +Inf bucket": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    "le not ascending": '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\n' +
      'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    "no _sum": '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n',
  };
  for (const [what, text] of Object.entries(bad)) {
    assert.throws(() => parsePrometheusText(text), Error, what);
  }
});
