/**
 * A test hook: crash points for the fault-injection tests. When the
 * environment variable `CONTENTMONSTER_FAILPOINT` (read once, at start-up)
 * equals a point's name, reaching that point kills this process with SIGKILL,
 * exactly as `kill -9` would at that moment. Unset (always, in production),
 * a failpoint does nothing.
 *
 * Points (in `delivery.ts`): `after-part` (a part is whole on the vessel and
 * recorded), `before-assemble`, `after-assemble` (the temp file is complete
 * on the vessel), `before-publish` (the store says a publish began, no
 * rename was sent), `after-publish` (renamed into place, the store not yet told).
 *
 * @module
 */

import { flushLog } from "../log/logger.ts";

const ARMED: string | undefined = (() => {
  try {
    return Deno.env.get("CONTENTMONSTER_FAILPOINT") || undefined;
  } catch {
    return undefined; // no permission to read the environment: no failpoint
  }
})();

/** Kills this process with SIGKILL if `CONTENTMONSTER_FAILPOINT` is `name`. */
export function failpoint(name: string): void {
  if (ARMED !== name) return;
  flushLog(); // The tests read what led here; a real kill -9 loses at most this turn's lines.
  Deno.kill(Deno.pid, "SIGKILL");
}
