/**
 * Assembling parts into a file on the vessel and hashing vessel files: small
 * files over SFTP (read back and hashed here, no process start on the
 * vessel), larger ones with one shell command (`cat` and `openssl` or
 * `sha256sum`) on the vessel.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { joinPath, parsePartName, partName, TransportError } from "../transport.ts";
import {
  assembleCommand,
  EXIT_PART_MISSING,
  EXIT_STOPPED,
  hashCommand,
  parseSha256,
} from "./commands.ts";
import { type ExecResult, hasStatus, SFTP_STATUS, type SshConnection } from "./connection.ts";
import {
  readDirectory,
  readFile,
  removeFile,
  removeQuietly,
  statPath,
  writeAndReadBack,
} from "./sftp_ops.ts";

/**
 * Files up to this size are assembled and hashed over SFTP (read back and
 * hashed here) instead of by a remote command, which costs a process start
 * on the vessel (10 ms or more) per file.
 */
export const SMALL_FILE = 256 * 1024;
/** How to assemble: durability and how long a vessel command may take. */
export interface AssembleOptions {
  /** Flush the assembled file to disk before returning. */
  readonly fsync: boolean;
  /** Milliseconds a command reading `bytes` may run. */
  readonly deadline: (bytes: number) => number;
  /** Permission bits the file gets once every byte is written (0600 until then). */
  readonly mode?: number;
}

/**
 * Concatenates parts `0..count-1` of `partDir` into `tempPath` and returns
 * its sha256 and size. A missing part throws a {@linkcode TransportError}
 * coded `"part-missing"`; on any error nothing is left at `tempPath`.
 */
export async function assembleParts(
  connection: SshConnection,
  partDir: string,
  count: number,
  tempPath: string,
  options: AssembleOptions,
): Promise<{ sha256: string; size: number }> {
  try {
    const sizes = await partSizes(connection, partDir, count);
    const missing = [];
    for (let index = 0; index < count; index++) if (!sizes.has(index)) missing.push(index);
    if (missing.length > 0) {
      throw new TransportError(`${describeMissing(missing)} missing`, "part-missing");
    }
    let size = 0;
    for (let index = 0; index < count; index++) size += sizes.get(index)!;
    const fsyncOverSftp = options.fsync && await connection.hasExtension("fsync@openssh.com");
    if (size <= SMALL_FILE && (fsyncOverSftp || !options.fsync)) {
      const parts = Array.from({ length: count }, (_, index) => ({
        path: joinPath(partDir, partName(index)),
        size: sizes.get(index)!,
      }));
      return {
        sha256: await assembleOverSftp(connection, parts, tempPath, size, options),
        size,
      };
    }
    // The command syncs the file before it reports: an fsync over SFTP after its answer
    // would cost a round trip (two with the open).
    const command = assembleCommand(partDir, count, tempPath, options.fsync, options.mode);
    const result = await connection.exec(command, options.deadline(size));
    const sha256 = result.code === 0 ? parseSha256(result.stdout) : undefined;
    if (!sha256) throw commandError(result);
    return { sha256, size };
  } catch (error) {
    await removeQuietly(connection, tempPath);
    throw error;
  }
}

/** The sha256 of the vessel file at `path`, or `undefined` if it does not exist. */
export async function hashFile(
  connection: SshConnection,
  path: string,
  deadline: (bytes: number) => number,
): Promise<string | undefined> {
  const stats = await statPath(connection, path);
  if (!stats) return undefined;
  if (!stats.isFile()) throw new TransportError("it is not a regular file", "failed");
  if (stats.size <= SMALL_FILE) {
    try {
      return sha256Of(await readFile(connection, path, stats.size));
    } catch (error) {
      if (error instanceof TransportError) throw error;
      // Changed or removed meanwhile: let the vessel's hasher decide below.
    }
  }
  const result = await connection.exec(hashCommand(path), deadline(stats.size));
  const sha256 = result.code === 0 ? parseSha256(result.stdout) : undefined;
  if (sha256) return sha256;
  if (!(await statPath(connection, path))) return undefined;
  throw commandError(result);
}

/**
 * Concatenates small parts into `tempPath` over SFTP: reads the parts, writes
 * the temp file, reads it back (and syncs it on the same handle) and returns
 * the sha256 of the bytes read back from the vessel.
 */
async function assembleOverSftp(
  connection: SshConnection,
  parts: { path: string; size: number }[],
  tempPath: string,
  size: number,
  options: AssembleOptions,
): Promise<string> {
  // Unlink first, so a writer left from an earlier try cannot reach the new file.
  const [, ...contents] = await Promise.all([
    removeFile(connection, tempPath),
    ...parts.map(async (part) => {
      try {
        return await readFile(connection, part.path, part.size);
      } catch (error) {
        if (!hasStatus(error, SFTP_STATUS.NO_SUCH_FILE)) throw error;
        throw new TransportError(`part ${JSON.stringify(part.path)} vanished`, "part-missing", {
          cause: error,
        });
      }
    }),
  ]);
  const whole = new Uint8Array(size);
  let offset = 0;
  for (const content of contents) {
    whole.set(content, offset);
    offset += content.byteLength;
  }
  return sha256Of(
    await writeAndReadBack(connection, tempPath, whole, {
      sync: options.fsync,
      mode: options.mode,
    }),
  );
}

/** Sizes of the parts `0..count-1` that exist: by stat for a few, by listing for many. */
async function partSizes(
  connection: SshConnection,
  partDir: string,
  count: number,
): Promise<Map<number, number>> {
  const sizes = new Map<number, number>();
  if (count <= 16) {
    const stats = await Promise.all(
      Array.from(
        { length: count },
        (_, index) => statPath(connection, joinPath(partDir, partName(index))),
      ),
    );
    stats.forEach((stat, index) => {
      if (stat?.isFile()) sizes.set(index, stat.size);
    });
    return sizes;
  }
  for (const entry of await readDirectory(connection, partDir) ?? []) {
    const index = parsePartName(entry.name);
    if (index !== undefined) sizes.set(index, entry.size);
  }
  return sizes;
}

/** The lower-case hex sha256 of `data`. */
export function sha256Of(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Classifies a failed vessel command by its exit status and stderr. */
export function commandError(result: ExecResult): TransportError {
  const stderr = result.stderr.trim().slice(0, 1000);
  const output = stderr ? `: ${stderr}` : "";
  if (result.code === EXIT_PART_MISSING) {
    return new TransportError("a part vanished before it was assembled", "part-missing");
  }
  if (result.code === EXIT_STOPPED) {
    return new TransportError(`the command's input ended before the last part${output}`, "failed");
  }
  if (/No space left on device|Disk quota exceeded/i.test(stderr)) {
    return new TransportError(`no space left on the vessel${output}`, "no-space");
  }
  if (result.code === 127) {
    return new TransportError(`a command is missing on the vessel${output}`, "unsupported");
  }
  if (result.code === undefined) {
    const how = result.signal ? `was killed by ${result.signal}` : "sent no exit status";
    return new TransportError(`the command ${how}${output}`, "failed");
  }
  if (result.code === 0) {
    return new TransportError(
      `the hasher printed no sha256: ${JSON.stringify(result.stdout.slice(0, 200))}`,
      "failed",
    );
  }
  return new TransportError(`the command exited ${result.code}${output}`, "failed");
}

function describeMissing(missing: number[]): string {
  const shown = missing.slice(0, 10).join(", ");
  const more = missing.length > 10 ? ` and ${missing.length - 10} more` : "";
  return missing.length === 1 ? `part ${shown} is` : `parts ${shown}${more} are`;
}
