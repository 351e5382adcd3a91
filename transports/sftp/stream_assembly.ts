/**
 * Assembly that overlaps the upload: one command on the vessel, started with
 * the assembly, appends each part to the temp file and its hasher as soon as
 * the part and all before it are whole (see
 * {@linkcode streamAssemblyCommand}). When every part is already announced by
 * the time a connection is ready (as in `assemble()`), the parts are
 * assembled at once by {@linkcode assembleParts} instead.
 *
 * @module
 */
import { type Assembled, type Assembly, TransportError } from "../transport.ts";
import { type AssembleOptions, assembleParts, commandError } from "./assemble.ts";
import { CAT_BATCH, EXIT_PART_MISSING, parseSha256, streamAssemblyCommand } from "./commands.ts";
import type { ExecResult, RunningCommand, SshConnection } from "./connection.ts";
import { OutputLines } from "./output_lines.ts";
import { removeQuietly } from "./sftp_ops.ts";

/** What to assemble, and how. */
export interface StreamAssemblyOptions extends AssembleOptions {
  readonly partDir: string;
  readonly count: number;
  readonly tempPath: string;
  /** What failed, for the message of `finish()` after `abort()`. */
  readonly action: string;
  /** Milliseconds the command may go without progress while it has parts to consume. */
  readonly stallMs: number;
  /** Runs `body` on one of the transport's connections, classifying its errors. */
  readonly run: (body: (connection: SshConnection) => Promise<Assembled>) => Promise<Assembled>;
  /** Hears the connection the file is assembled on once every part is announced. */
  readonly lastPartAnnounced?: (connection: SshConnection) => void;
}

const PROGRESS = /^ok (\d+) (\d+)$/;
/** Lines of the command's final report kept (it prints four). */
const MAX_REPORT_LINES = 64;

/** A streamed assembly over SSH; see {@linkcode Assembly}. */
export class SftpAssembly implements Assembly {
  readonly #options: StreamAssemblyOptions;
  readonly #ready = new Set<number>();
  readonly #result: Promise<Assembled>;
  readonly #lines = new OutputLines((line) => this.#read(line));
  #command?: RunningCommand;
  #connection?: SshConnection;
  /** Parts announced to the command, which are `0..sent-1`. */
  #sent = 0;
  /** Parts and bytes the command reported done. */
  #done = 0;
  #bytes = 0;
  readonly #report: string[] = [];
  #aborting?: Promise<void>;

  /** Starts the assembly on a connection from `options.run`. */
  constructor(options: StreamAssemblyOptions) {
    this.#options = options;
    this.#result = options.run((connection) => this.#assemble(connection));
    this.#result.catch(() => {}); // Observed by finish() or abort(), maybe never.
  }

  partReady(index: number): void {
    const { count } = this.#options;
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new RangeError(
        `Cannot announce part ${index}: the assembly has parts 0 to ${count - 1}`,
      );
    }
    this.#ready.add(index);
    this.#pump();
  }

  finish(): Promise<Assembled> {
    return this.#result.then((assembled) => {
      if (this.#aborting) {
        throw new TransportError(`${this.#options.action}: it was aborted`, "failed");
      }
      return assembled;
    });
  }

  abort(): Promise<void> {
    this.#aborting ??= (async () => {
      this.#stop();
      await this.#result.catch(() => {});
      const connection = this.#connection;
      if (connection) await removeQuietly(connection, this.#options.tempPath);
    })();
    return this.#aborting;
  }

  async #assemble(connection: SshConnection): Promise<Assembled> {
    this.#connection = connection;
    const { partDir, count, tempPath, fsync, mode } = this.#options;
    if (this.#aborting) throw aborted();
    if (this.#ready.size === count) {
      this.#options.lastPartAnnounced?.(connection);
      return {
        tempPath,
        ...await assembleParts(connection, partDir, count, tempPath, this.#options),
      };
    }
    // The command syncs the file before its report: an fsync over SFTP after the report would
    // cost a round trip more at the end of every file.
    const command = await connection.spawn(
      streamAssemblyCommand(partDir, count, tempPath, fsync, mode),
      { deadlineMs: this.#options.stallMs, onStdout: (data) => this.#lines.push(data) },
    );
    this.#command = command;
    command.setDeadline(undefined);
    if (this.#aborting) this.#stop();
    this.#pump();
    try {
      const result = await command.result;
      this.#lines.end();
      const size = this.#verify(result);
      return { tempPath, sha256: parseSha256(this.#report.join("\n"))!, size };
    } catch (error) {
      await removeQuietly(connection, tempPath);
      throw error;
    }
  }

  /** Ends the command's input: before the last part, it removes the temp file and exits. */
  #stop(): void {
    const command = this.#command;
    if (!command) return;
    command.end();
    if (this.#sent < this.#options.count) {
      command.setDeadline(Date.now() + this.#options.stallMs);
    }
  }

  /**
   * Announces the parts that are ready next in order, in batches (the index
   * of each one's last) of at most {@linkcode CAT_BATCH}, and closes stdin
   * after the last part.
   */
  #pump(): void {
    const command = this.#command;
    if (!command || this.#aborting) return;
    const idle = this.#done === this.#sent;
    const first = this.#sent;
    while (this.#ready.has(this.#sent)) {
      const batch = this.#sent;
      while (this.#ready.has(this.#sent) && this.#sent - batch < CAT_BATCH) this.#sent++;
      command.write(`${this.#sent - 1}\n`);
    }
    if (this.#sent === this.#options.count) {
      command.end();
      if (first < this.#sent) this.#options.lastPartAnnounced?.(this.#connection!);
    }
    if (idle && this.#sent > first) this.#schedule();
  }

  /** Gives the command a few Timeouts per part, and time to hash and sync at the end. */
  #schedule(): void {
    const command = this.#command;
    if (!command) return;
    if (this.#done === this.#options.count) {
      command.setDeadline(Date.now() + this.#options.deadline(this.#bytes));
    } else if (this.#done < this.#sent) command.setDeadline(Date.now() + this.#options.stallMs);
    else command.setDeadline(undefined); // Waiting for parts to be uploaded is not a stall.
  }

  #read(line: string): void {
    const progress = PROGRESS.exec(line);
    if (progress) {
      this.#done = Number(progress[1]);
      this.#bytes = Number(progress[2]);
      this.#schedule();
    } else if (line && this.#report.length < MAX_REPORT_LINES) this.#report.push(line);
  }

  /** Checks the command's report: every part, the temp file's size, a sha256. Returns the size. */
  #verify(result: ExecResult): number {
    const report = this.#report.join("\n");
    const { count } = this.#options;
    if (result.code === EXIT_PART_MISSING) {
      const missing = /^missing (\d+)$/m.exec(report)?.[1];
      throw new TransportError(
        missing === undefined ? "the part directory is missing" : `part ${missing} is missing`,
        "part-missing",
      );
    }
    if (this.#aborting) throw aborted();
    if (result.code !== 0) throw commandError(result);
    const parts = /^parts (\d+) (\d+) end$/m.exec(report);
    const size = /^size (\d+)$/m.exec(report)?.[1];
    const sha256 = parseSha256(report);
    if (!parts || Number(parts[1]) !== count || size !== parts[2] || !sha256) {
      throw new TransportError(
        `the assembly command's report does not show ${count} parts, a matching size and a ` +
          `sha256: ${JSON.stringify(report.slice(0, 500))}`,
        "failed",
      );
    }
    return Number(size);
  }
}

function aborted(): TransportError {
  return new TransportError("it was aborted", "failed");
}
