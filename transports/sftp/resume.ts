/**
 * Resuming a file cut mid-way: a part's `N.part.tmp` or a one-part file's
 * temp name left by a try whose connection broke keeps what the vessel had
 * written, so the next try sends only the rest instead of starting from
 * byte 0 (on a slow link that breaks every few minutes, starting over can
 * mean never finishing).
 *
 * What is kept is checked, not trusted: it must be a file only we could
 * have written, the login user's and private (0600), and the vessel hashes
 * its start, which must equal the sha256 of the same bytes here (the file
 * may hold another version of the source, or writes of a dead connection).
 * The start is kept as a copy in a new file that takes the name (see
 * {@linkcode prefixCopyCommand}), never by writing on in the file left, which
 * the try that left it may still reach. The final sha256 of the whole file
 * is verified as always.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Stats } from "./_ssh2.ts";
import { parseSha256, prefixCopyCommand } from "./commands.ts";
import type { SshConnection } from "./connection.ts";
import { isPrivateFileOf, removeQuietly, renameReplacing } from "./sftp_ops.ts";
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

/**
 * Added to the name of the file left for the copy of its start: still one
 * of our temp names (`.contentmonster-*.tmp`, `N.part…`), which leftover
 * cleanup removes if a try dies before the copy takes the name.
 */
const COPY_SUFFIX = ".kept.tmp";

/**
 * Decides, for a regular file found at `path`, from which byte to write
 * `data`; when not 0, a new file of the login user holding that many bytes
 * (0600) has taken the name.
 */
export type ResumeCheck = (
  path: string,
  stats: Stats,
  data: Uint8Array | PartData,
) => Promise<number>;

/**
 * A {@linkcode ResumeCheck} that keeps, copied into a new file that then
 * takes its name, the longest start of the file, in whole blocks and at
 * most `data`'s length, whose sha256 on the vessel equals that of the same
 * bytes of `data`; 0 (write everything) when that
 * is not one block, the file is longer than `data`, the bytes differ, or
 * the file is not one we left. `deadline` gives
 * the milliseconds a command reading that many bytes may run; `loginUid`
 * the uid our files get on the vessel.
 */
export function resumeCheck(
  connection: SshConnection,
  deadline: (bytes: number) => number,
  loginUid: () => Promise<number>,
): ResumeCheck {
  return async (path, stats, data) => {
    const size = Number(stats.size ?? 0);
    if (size > data.byteLength) return 0;
    const blocks = Math.floor(size / BLOCK);
    const offset = blocks * BLOCK;
    // Only a file a try of ours left, the login user's and 0600 as every part and temp file is
    // until it is whole. A one-part file's temp name is beside its destination, where a user
    // who can write the directory can guess it (the instance id shows in other temp names,
    // the delivery ids count up) and plant a file of theirs that anyone may write, holding a
    // start they know (a common header): resumed, it received the rest of the file, readable
    // through the link they kept to it, and would have been published as theirs. A file of
    // ours renamed there may be open for reading by others unless it is 0600. What is refused
    // is written again from byte 0 as a new file; at worst a try cut right after its mode was
    // set sends the file again.
    if (offset === 0 || !isPrivateFileOf(stats, await loginUid())) return 0;
    const copy = `${path}${COPY_SUFFIX}`;
    // Read and written once each: the deadline of twice the bytes.
    const command = prefixCopyCommand(path, copy, blocks, BLOCK);
    const result = await connection.exec(command, deadline(2 * offset));
    const remote = result.code === 0 ? parseSha256(result.stdout) : undefined;
    const local = await prefixSha256(data, offset);
    if (remote !== local) {
      await removeQuietly(connection, copy);
      return 0;
    }
    await renameReplacing(connection, copy, path, true);
    return offset;
  };
}

/** The sha256 of the first `length` bytes of `data`, read a MiB at a time. */
async function prefixSha256(data: Uint8Array | PartData, length: number): Promise<string> {
  const hash = createHash("sha256");
  for await (const bytes of partChunks(data, length)) hash.update(bytes);
  return hash.digest("hex");
}
