/**
 * A narrowband link (2 KiB/s: a slow satellite or radio link) with the
 * default `Timeout` of 10 s (issue 8, item 0: alive however slow), on both
 * carriers. The vessel decodes nothing of an SSH packet until it is whole,
 * and `ssh` packed a file's queued writes into 32 KiB packets: the first
 * reply came after 16 s, the connection was taken for dead, and the file
 * never arrived. The builtin carrier's commands waited behind 128 KiB of
 * queued writes past their deadline.
 */
import { MiB, noticeSkip } from "./fault_harness.ts";
import { slowLinkTest } from "./slow_link.ts";

noticeSkip("faults_narrowband_test.ts");
for (const sshClient of ["openssh", "builtin"] as const) {
  slowLinkTest({
    size: MiB / 16,
    timeout: 10,
    bytesPerSecond: 2 * 1024,
    latencyMs: 300,
    sshClient,
    connections: 1,
  });
}
