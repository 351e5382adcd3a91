/**
 * Helpers shared by the engine (`src/`) and the transports (`transports/`).
 * This folder imports neither, so the two never import each other.
 *
 * @module
 */

/** The message of an error, or the thrown value as text. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
