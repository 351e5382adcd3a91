/**
 * The local transport's streamed assembly: parts are appended to the temp
 * file and hashed in order as they are announced.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Assembled, type Assembly, TransportError } from "./transport.ts";
import { createPrivateFile, setModeOf } from "./_local_files.ts";

const COPY_BUFFER = 1 << 20;

/** What {@linkcode LocalAssembly} needs from its transport. */
export interface LocalAssemblyOptions {
  readonly fsync: boolean;
  /** Permission bits the file gets once every byte is written (0600 until then). */
  readonly mode?: number;
  /** The destination and vessel, for messages. */
  readonly where: string;
  /** Opens part `index`; throws a "part-missing" TransportError if it is not there. */
  open(index: number): Promise<Deno.FsFile>;
  /** Turns any other failure into the transport's TransportError. */
  fail(error: unknown): TransportError;
}

/** A streamed assembly in-process: parts are appended and hashed as they are announced. */
export class LocalAssembly implements Assembly {
  readonly #count: number;
  readonly #tempPath: string;
  readonly #localTemp: string;
  readonly #options: LocalAssemblyOptions;
  readonly #ready = new Set<number>();
  readonly #result: Promise<Assembled>;
  #wake?: () => void;
  #aborting?: Promise<void>;

  constructor(count: number, tempPath: string, localTemp: string, options: LocalAssemblyOptions) {
    this.#count = count;
    this.#tempPath = tempPath;
    this.#localTemp = localTemp;
    this.#options = options;
    this.#result = this.#assemble().catch(async (error) => {
      await Deno.remove(localTemp).catch(() => {});
      throw error instanceof TransportError ? error : options.fail(error);
    });
    this.#result.catch(() => {}); // Observed by finish() or abort(), maybe never.
  }

  partReady(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.#count) {
      throw new RangeError(
        `Cannot announce part ${index}: the assembly has parts 0 to ${this.#count - 1}`,
      );
    }
    this.#ready.add(index);
    this.#wake?.();
  }

  finish(): Promise<Assembled> {
    return this.#result.then((assembled) => {
      if (this.#aborting) throw this.#aborted();
      return assembled;
    });
  }

  abort(): Promise<void> {
    this.#aborting ??= (async () => {
      this.#wake?.();
      await this.#result.catch(() => {});
      await Deno.remove(this.#localTemp).catch(() => {});
    })();
    return this.#aborting;
  }

  #aborted(): TransportError {
    return new TransportError(`Cannot assemble ${this.#options.where}: it was aborted`, "failed");
  }

  async #assemble(): Promise<Assembled> {
    // Unlink first, so a writer left from an earlier try cannot reach the new file.
    await Deno.remove(this.#localTemp).catch(ignoreNotFound);
    using output = await createPrivateFile(this.#localTemp);
    const hash = createHash("sha256");
    const buffer = new Uint8Array(COPY_BUFFER);
    let size = 0;
    for (let index = 0; index < this.#count; index++) {
      while (!this.#ready.has(index)) {
        if (this.#aborting) throw this.#aborted();
        await new Promise<void>((resolve) => this.#wake = resolve);
      }
      if (this.#aborting) throw this.#aborted();
      using input = await this.#options.open(index);
      for (let read; (read = await input.read(buffer)) !== null;) {
        const chunk = buffer.subarray(0, read);
        hash.update(chunk);
        await writeAll(output, chunk);
        size += read;
      }
    }
    if (this.#options.mode !== undefined) {
      await setModeOf(output, this.#localTemp, this.#options.mode);
    }
    if (this.#options.fsync) await output.sync();
    return { tempPath: this.#tempPath, sha256: hash.digest("hex"), size };
  }
}

/** Rethrows anything but NotFound (for removing what may not be there). */
export function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) throw error;
}

/** Writes all of `data` to `file`. */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let written = 0; written < data.length;) {
    written += await file.write(data.subarray(written));
  }
}
