/**
 * `deno task test:slow-link` (~95 s, so not in the default run): issue 8's
 * own case, an 8 MiB file over 128 KiB/s with 1 s round trips and the
 * default Timeout (10 s). tests/faults_slow_link_test.ts runs a 2 MiB version.
 */
import { MiB, noticeSkip } from "./fault_harness.ts";
import { slowLinkTest } from "./slow_link.ts";

noticeSkip("faults_slow_link.ts");
slowLinkTest(8 * MiB, 10);
