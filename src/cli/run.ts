/** `contentmonster run`: the daemon. */
import type { Config } from "../config/types.ts";
import { logger } from "../log/logger.ts";
import { startReplicator } from "./replicator.ts";
import type { Transport } from "../../transports/mod.ts";

/** Replicates until `signal` aborts, then stops cleanly. */
export async function runDaemon(
  config: Config,
  signal: AbortSignal,
  transports: Transport[],
): Promise<number> {
  const replicator = await startReplicator(config, { once: false, transports });
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  logger("").info("stopping");
  await replicator.stop();
  logger("").info("stopped");
  return 0;
}
