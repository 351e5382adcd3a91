/**
 * `deno task test:slow-link` (~95 s per carrier, so not in the default run):
 * issue 8's own case, an 8 MiB file over 128 KiB/s with 1 s round trips and
 * the default Timeout (10 s), on both carriers. tests/faults_slow_link_test.ts
 * runs a shorter, harsher version.
 */
import { MiB, noticeSkip } from "./fault_harness.ts";
import { slowLinkTest } from "./slow_link.ts";

noticeSkip("faults_slow_link.ts");
for (const sshClient of ["openssh", "builtin"] as const) {
  slowLinkTest({
    size: 8 * MiB,
    timeout: 10,
    bytesPerSecond: 128 * 1024,
    latencyMs: 500,
    sshClient,
  });
}
