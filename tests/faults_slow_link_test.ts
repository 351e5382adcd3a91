/**
 * A slow link that is alive is not taken for dead (issue 8, item 0), on both
 * carriers, with one connection: at 48 KiB/s one 255 KiB write's reply takes
 * 5 s, longer than the Timeout of 3 s, and the 1 MiB behind a keepalive take
 * 20 s. The issue's own case (8 MiB over 128 KiB/s, 1 s round trips, the
 * default Timeout) is `deno task test:slow-link`.
 */
import { MiB, noticeSkip } from "./fault_harness.ts";
import { slowLinkTest } from "./slow_link.ts";

noticeSkip("faults_slow_link_test.ts");
for (const sshClient of ["openssh", "builtin"] as const) {
  slowLinkTest({
    size: MiB,
    timeout: 3,
    bytesPerSecond: 48 * 1024,
    latencyMs: 100,
    sshClient,
    connections: 1,
  });
}
