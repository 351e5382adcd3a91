/** Moves a source file into `processed/` once every vessel holds it. */
import type { DirectoryConfig } from "../config/types.ts";
import type { FileRecord, Store } from "../store/store.ts";
import { PROCESSED_DIR } from "../watch/scan.ts";
import { sameVersion, statSource } from "./source.ts";

/** What finalizing a file did. */
export type FinalizeOutcome = "processed" | "vanished" | "changed";

/**
 * Moves a fully delivered file to `<Location>/processed/<relpath>` and forgets
 * it. A source that changed since it was sent is queued again instead.
 */
export async function finalizeFile(
  store: Store,
  directory: DirectoryConfig,
  file: FileRecord,
): Promise<FinalizeOutcome> {
  const source = `${directory.location}/${file.relpath}`;
  const now = await statSource(source);
  if (now === undefined) {
    // Gone already: moved by an earlier run that died before forgetting it, or by someone else.
    store.removeFile(file.id);
    return "vanished";
  }
  if (!sameVersion(now, file)) {
    store.fileChanged(file.id, now.size, now.mtimeMs);
    return "changed";
  }
  const target = `${directory.location}/${PROCESSED_DIR}/${file.relpath}`;
  await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
  await Deno.rename(source, target);
  store.removeFile(file.id);
  return "processed";
}
