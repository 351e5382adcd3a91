/** `contentmonster once`: replicate what is there now, wait, exit. */
import type { Config } from "../config/types.ts";
import { logger } from "../log/logger.ts";
import { startReplicator } from "./replicator.ts";
import { plural } from "../log/units.ts";
import type { Transport } from "../../transports/mod.ts";

/** How often `once` asks whether it is done: it exits at most this long after the last file. */
const POLL_MS = 10;

/** Exit 0 when everything was delivered and moved, 1 on failure or timeout. */
export async function runOnce(
  config: Config,
  signal: AbortSignal,
  transports: Transport[],
  timeoutSeconds?: number,
): Promise<number> {
  const log = logger("");
  const replicator = await startReplicator(config, { once: true, transports });
  const deadline = timeoutSeconds === undefined ? Infinity : Date.now() + timeoutSeconds * 1000;
  try {
    while (!signal.aborted) {
      if (replicator.watcher.idle() && replicator.engine.idle()) break;
      if (Date.now() >= deadline) {
        log.error(`timed out after ${timeoutSeconds} s with work left`);
        return 1;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    if (signal.aborted) return 1;
    const unaddressable = replicator.store.unaddressableFiles().length;
    if (unaddressable > 0) {
      log.error(
        `${plural(unaddressable, "file")} cannot be replicated (names not valid UTF-8); ` +
          "see the warnings above or `contentmonster status`",
      );
      return 1;
    }
    const { failed, files } = replicator.store.counts();
    if (failed > 0) {
      log.error(
        `${plural(failed, "delivery", "deliveries")} failed; see \`contentmonster status\``,
      );
      return 1;
    }
    const unmovable = replicator.engine.unmovable();
    if (unmovable > 0) {
      log.error(
        `${plural(unmovable, "file")} delivered but not moved to processed/; see the errors above`,
      );
      return 1;
    }
    log.info(
      files === 0
        ? "everything delivered"
        : `${plural(files, "file")} ${files === 1 ? "waits" : "wait"} for vessels`,
    );
    return files === 0 ? 0 : 1;
  } finally {
    await replicator.stop();
  }
}
