/**
 * The vessels' transports, opened and logging in as soon as the config is
 * read, before the engine's modules load and the state database opens: the
 * engine logs in to every vessel at its start anyway (to remove old
 * leftovers, beside the first deliveries), and the logins then overlap the
 * rest of the start (loopback: the first `ssh` started 35-60 ms sooner, of
 * a login of 250-300 ms; on a long link a login is many round trips).
 */
import type { Config } from "../config/types.ts";
import { FIRST_CONNECTIONS } from "../engine/connection_governor.ts";
import { logger } from "../log/logger.ts";
import { openTransport, type Transport } from "../../transports/mod.ts";

/**
 * How long the start waits at most for the logins to be under way before it
 * loads the engine: loading keeps this thread busy, and each step of a
 * login's start (`ssh -G`, its private directory) waited for a turn. With
 * the wait, the first `ssh` started 86-145 ms into the process (median 101)
 * against 100-160 (111) on loopback, and 83-111 against 114-153 on `wan`.
 */
const LOGIN_START_WAIT_MS = 100;

/** Opens every vessel's transport and starts its login. */
export async function openTransportsAhead(config: Config): Promise<Transport[]> {
  const transports = await Promise.all(
    config.vessels.map((vessel) => openTransport(vessel, logger(`vessel ${vessel.name}`))),
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(transports.map((transport) => transport.connectAhead?.(FIRST_CONNECTIONS))),
    new Promise((resolve) => timer = setTimeout(resolve, LOGIN_START_WAIT_MS)),
  ]);
  clearTimeout(timer);
  return transports;
}
