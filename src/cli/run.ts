/** `contentmonster run`: the daemon. */
import type { Config } from "../config/types.ts";
import { logger } from "../log/logger.ts";
import { startReplicator } from "./replicator.ts";

/** Replicates until `signal` aborts, then stops cleanly. */
export async function runDaemon(config: Config, signal: AbortSignal): Promise<number> {
  const replicator = await startReplicator(config, { once: false });
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  logger("").info("stopping");
  await replicator.stop();
  logger("").info("stopped");
  return 0;
}
