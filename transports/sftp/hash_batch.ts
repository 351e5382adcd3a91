/**
 * Small files hashed on the vessel in batches. On a long link, reading a
 * small file back to hash it sends its bytes across the link a second time,
 * on streams that start slow, and a ship's uplink is often its narrow side.
 * The vessel hashes every small file written meanwhile instead, in one
 * request to its hasher (resident_hasher.ts): the round trip is shared by
 * the batch, and only the hashes come back.
 *
 * @module
 */
import { parentOf, TransportError } from "../transport.ts";
import type { HashGroup } from "./commands.ts";
import type { BatchHashes } from "./resident_hasher.ts";
import type { SshConnection } from "./connection.ts";

/** Batches running at once: a new one need not wait for a slow one. */
const RUNNING_BATCHES = 4;
/** Files per command: a few KiB of names. */
const FILES_PER_BATCH = 200;
/**
 * Characters of paths per command: far below Linux's 128 KiB limit on one
 * argument (the command is one `sh -c` argument) even when quoting makes
 * each character four bytes, however deep the directories.
 */
const PATH_BYTES_PER_BATCH = 16 << 10;

interface Waiting {
  readonly path: string;
  readonly bytes: number;
  readonly wroteOn?: SshConnection;
  resolve(sha256: string): void;
  reject(error: unknown): void;
}

/**
 * Hashes the files of `groups` on the vessel, given the bytes they hold (for
 * its deadline), on the connection `on` where it can: the one that wrote
 * them all, whose hasher was started beside their writes.
 */
export type HashGroups = (
  groups: readonly HashGroup[],
  bytes: number,
  on?: SshConnection,
) => Promise<BatchHashes>;

/** Hashes vessel files in batches of those asked for together. */
export class HashBatcher {
  readonly #hashGroups: HashGroups;
  #waiting: Waiting[] = [];
  #running = 0;
  #scheduled = false;

  constructor(hashGroups: HashGroups) {
    this.#hashGroups = hashGroups;
  }

  /**
   * The sha256 of the vessel file `path` (`bytes` long), whose name is one
   * of our temp names, written on `wroteOn`. Rejects with a
   * {@linkcode TransportError} if the vessel could not hash it.
   */
  hash(path: string, bytes: number, wroteOn?: SshConnection): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ path, bytes, wroteOn, resolve, reject });
      this.#schedule();
    });
  }

  /** Starts a batch once this turn's callers have asked, if one may start. */
  #schedule(): void {
    if (this.#scheduled || this.#running >= RUNNING_BATCHES || this.#waiting.length === 0) return;
    this.#scheduled = true;
    setTimeout(() => {
      this.#scheduled = false;
      if (this.#running >= RUNNING_BATCHES) return;
      let files = 0;
      for (let pathBytes = 0; files < this.#waiting.length && files < FILES_PER_BATCH; files++) {
        pathBytes += this.#waiting[files].path.length;
        if (files > 0 && pathBytes > PATH_BYTES_PER_BATCH) break;
      }
      const batch = this.#waiting.splice(0, files);
      this.#running++;
      this.#hashBatch(batch).finally(() => {
        this.#running--;
        this.#schedule();
      });
      this.#schedule();
    }, 0);
  }

  async #hashBatch(batch: Waiting[]): Promise<void> {
    const groups: { dir: string; names: string[] }[] = [];
    const groupOf = new Map<string, number>();
    const keys = batch.map(({ path }) => {
      const dir = parentOf(path);
      let group = groupOf.get(dir);
      if (group === undefined) {
        group = groups.push({ dir, names: [] }) - 1;
        groupOf.set(dir, group);
      }
      const name = path.slice(path.lastIndexOf("/") + 1);
      groups[group].names.push(name);
      return `${group}/${name}`;
    });
    let hashed: BatchHashes;
    try {
      const bytes = batch.reduce((sum, file) => sum + file.bytes, 0);
      // Files written on several connections go to the least busy one: a request pinned to a
      // busy stream waits behind its queued writes.
      const wroteOn = batch.every((file) => file.wroteOn === batch[0].wroteOn)
        ? batch[0].wroteOn
        : undefined;
      hashed = await this.#hashGroups(groups, bytes, wroteOn);
    } catch (error) {
      for (const file of batch) file.reject(error);
      return;
    }
    for (const [index, file] of batch.entries()) {
      const sha256 = hashed.hashes.get(keys[index]);
      if (sha256) file.resolve(sha256);
      else {
        file.reject(
          new TransportError(
            `the vessel's hasher gave no sha256 for it (${hashed.detail})`,
            "failed",
          ),
        );
      }
    }
  }
}
