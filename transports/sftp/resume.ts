/**
 * Resuming a file cut mid-way: a part's `N.part.tmp` or a one-part file's
 * temp name left by a try whose connection broke keeps what the vessel had
 * written, so the next try sends only the rest instead of starting from
 * byte 0 (on a slow link that breaks every few minutes, starting over can
 * mean never finishing).
 *
 * What is kept is checked, not trusted: the vessel hashes the start of the
 * file and it must equal the sha256 of the same bytes here (the file may
 * hold another version of the source, or writes of a dead connection). The
 * final sha256 of the whole file is verified as always.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Stats } from "./_ssh2.ts";
import { parseSha256, prefixHashCommand } from "./commands.ts";
import type { SshConnection } from "./connection.ts";
import { partChunks, type PartData } from "../transport.ts";

/**
 * The unit kept: the start of the file is checked in whole blocks, and one
 * block is enough to be kept. A file left behind means a try was cut, and
 * the check costs one command round trip; on a link cut every few hundred
 * KiB, sending again from byte 0 what a check would keep never ends (with
 * 512 KiB as the least kept, a 1 MiB part over connections cut every
 * 250-400 KiB never arrived).
 */
const BLOCK = 64 * 1024;

/** Decides, for a regular file found at `path`, from which byte to write `data`. */
export type ResumeCheck = (
  path: string,
  stats: Stats,
  data: Uint8Array | PartData,
) => Promise<number>;

/**
 * A {@linkcode ResumeCheck} that keeps the longest start of the file, in
 * whole blocks and at most `data`'s length, whose sha256 on the vessel
 * equals that of the same bytes of `data`; 0 (write everything) when that
 * is not one block, the file is longer than `data`, or the bytes differ.
 * `deadline` gives the milliseconds a command reading that many bytes may
 * run.
 */
export function resumeCheck(
  connection: SshConnection,
  deadline: (bytes: number) => number,
): ResumeCheck {
  return async (path, stats, data) => {
    const size = Number(stats.size ?? 0);
    if (size > data.byteLength) return 0;
    const blocks = Math.floor(size / BLOCK);
    const offset = blocks * BLOCK;
    if (offset === 0) return 0;
    const result = await connection.exec(prefixHashCommand(path, blocks, BLOCK), deadline(offset));
    const remote = result.code === 0 ? parseSha256(result.stdout) : undefined;
    const local = await prefixSha256(data, offset);
    return remote === local ? offset : 0;
  };
}

/** The sha256 of the first `length` bytes of `data`, read a MiB at a time. */
async function prefixSha256(data: Uint8Array | PartData, length: number): Promise<string> {
  const hash = createHash("sha256");
  for await (const bytes of partChunks(data, length)) hash.update(bytes);
  return hash.digest("hex");
}
