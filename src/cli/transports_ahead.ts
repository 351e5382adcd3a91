/**
 * The vessels' transports, opened and logging in as soon as the config is
 * read, before the engine's modules load and the state database opens: the
 * engine logs in to every vessel at its start anyway (to remove old
 * leftovers, beside the first deliveries), and the logins then overlap the
 * rest of the start (loopback: the first `ssh` started 35-60 ms sooner, of
 * a login of 250-300 ms; on a long link a login is many round trips).
 */
import type { Config } from "../config/types.ts";
import { logger } from "../log/logger.ts";
import { openTransport, type Transport } from "../../transports/mod.ts";

/** Opens every vessel's transport and starts its login. */
export async function openTransportsAhead(config: Config): Promise<Transport[]> {
  const transports = await Promise.all(
    config.vessels.map((vessel) => openTransport(vessel, logger(`vessel ${vessel.name}`))),
  );
  for (const transport of transports) transport.connectAhead?.();
  return transports;
}
