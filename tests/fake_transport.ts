/**
 * A scripted in-memory transport for in-process tests of the engine
 * (`runDelivery`, `VesselWorker`, the finalizer): the vessel is two maps,
 * every call is recorded, and a test can make any call fail or misbehave
 * with {@linkcode FakeTransport.script}. It keeps the transport contract
 * (temp name, atomic publish, part-missing) so the state machine sees what
 * a real vessel would do.
 */
import { createHash } from "node:crypto";
import {
  type Assembled,
  type Assembly,
  type PartData,
  type ProbeItem,
  type SpaceInfo,
  tempPathFor,
  type Transport,
  type TransportCapabilities,
  TransportError,
} from "../transports/transport.ts";

/** The calls a script can intercept. */
export type FakeCall =
  | "prepare"
  | "listParts"
  | "putPart"
  | "putSparePart"
  | "assemble"
  | "putWhole"
  | "hash"
  | "publish"
  | "removeParts"
  | "remove"
  | "freeSpace";

/**
 * Runs before a call: throw to make the call fail, or return bytes to store
 * instead of the real ones (putPart, putWhole, assemble: a corrupted copy).
 */
export type FakeScript = (
  args: readonly unknown[],
) => void | Uint8Array | Promise<void | Uint8Array>;

/** A vessel in memory. */
export class FakeTransport implements Transport {
  readonly vessel: string;
  readonly capabilities: TransportCapabilities = { parallelParts: 2, parallelDeliveries: 2 };
  /** Files on the vessel by absolute path, and their modes. */
  readonly files = new Map<string, Uint8Array>();
  readonly modes = new Map<string, number>();
  /** Parts by delivery key. */
  readonly parts = new Map<string, Map<number, Uint8Array>>();
  /** Every call, in order: `["putPart", key, index, "bytes" | "read as sent"]`. */
  readonly calls: [FakeCall, ...unknown[]][] = [];
  readonly #scripts = new Map<FakeCall, FakeScript[]>();
  freeBytes: number | undefined = undefined;

  constructor(vessel = "fake") {
    this.vessel = vessel;
  }

  /** The next call of `call` runs `script` first (scripts queue up, one per call). */
  script(call: FakeCall, script: FakeScript): this {
    const list = this.#scripts.get(call) ?? [];
    list.push(script);
    this.#scripts.set(call, list);
    return this;
  }

  /** How many times `call` ran. */
  count(call: FakeCall): number {
    return this.calls.filter(([name]) => name === call).length;
  }

  async #enter(call: FakeCall, ...args: unknown[]): Promise<Uint8Array | undefined> {
    this.calls.push([call, ...args]);
    const script = this.#scripts.get(call)?.shift();
    return (await script?.(args)) ?? undefined;
  }

  async prepare(key: string, destination: string): Promise<Set<number>> {
    await this.#enter("prepare", key, destination);
    if (!this.parts.has(key)) this.parts.set(key, new Map());
    return new Set(this.parts.get(key)!.keys());
  }

  async listParts(key: string): Promise<Set<number>> {
    await this.#enter("listParts", key);
    return new Set(this.parts.get(key)?.keys() ?? []);
  }

  async putPart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    _bytesAfter?: number,
    ending?: () => void,
  ): Promise<void> {
    // Like a real transport's: the last bytes leave before the part is stored.
    ending?.();
    const replaced = await this.#enter(
      "putPart",
      key,
      index,
      data instanceof Uint8Array ? "bytes" : "read as sent",
    );
    await this.#storePart(key, index, data, replaced);
  }

  /** Whether {@linkcode putSparePart} sends a copy (a real one may find no stall, or no idle connection). */
  idleForSpares = true;

  putSparePart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
  ): Promise<void> | undefined {
    if (!this.idleForSpares) return undefined;
    return (async () => {
      const replaced = await this.#enter("putSparePart", key, index);
      await this.#storePart(key, index, data, replaced);
    })();
  }

  /** Stores part `index` of `key`: its bytes, or those a script gave instead (`replaced`). */
  async #storePart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    replaced: Uint8Array | undefined,
  ): Promise<void> {
    const parts = this.parts.get(key);
    if (!parts) throw new TransportError(`part directory of "${key}" missing`, "failed");
    const bytes = data instanceof Uint8Array
      ? data.slice()
      : await data.read(0, new Uint8Array(data.byteLength));
    parts.set(index, replaced?.slice() ?? bytes);
  }

  async assemble(key: string, count: number, destination: string): Promise<Assembled> {
    const replaced = await this.#enter("assemble", key, count, destination);
    const parts = this.parts.get(key);
    const chunks: Uint8Array[] = [];
    for (let index = 0; index < count; index++) {
      const part = parts?.get(index);
      if (!part) {
        throw new TransportError(`part ${index} of "${key}" is missing`, "part-missing");
      }
      chunks.push(part);
    }
    return this.#store(tempPathFor(key, destination), replaced ?? concat(chunks));
  }

  startAssembly(key: string, count: number, destination: string, mode?: number): Assembly {
    const ready = new Set<number>();
    let aborted = false;
    let finishing: Promise<Assembled> | undefined;
    return {
      partReady: (index) => {
        if (!Number.isInteger(index) || index < 0 || index >= count) {
          throw new RangeError(`part ${index} out of 0..${count - 1}`);
        }
        ready.add(index);
      },
      finish: () => {
        finishing ??= (async () => {
          for (let index = 0; index < count; index++) {
            if (!ready.has(index)) throw new Error(`part ${index} was never announced`);
          }
          if (aborted) throw new TransportError("aborted", "failed");
          const assembled = await this.assemble(key, count, destination);
          this.#setMode(assembled.tempPath, mode);
          return assembled;
        })();
        return finishing;
      },
      abort: async () => {
        aborted = true;
        this.files.delete(tempPathFor(key, destination));
        await finishing?.catch(() => {});
      },
    };
  }

  async putWhole(
    key: string,
    destination: string,
    data: Uint8Array,
    mode?: number,
  ): Promise<Assembled> {
    const replaced = await this.#enter("putWhole", key, destination);
    const assembled = this.#store(tempPathFor(key, destination), (replaced ?? data).slice());
    this.#setMode(assembled.tempPath, mode);
    return assembled;
  }

  /** A file written with a mode has it (0600 otherwise, as the real transports make them). */
  #setMode(path: string, mode: number | undefined): void {
    if (mode === undefined) this.modes.delete(path);
    else this.modes.set(path, mode);
  }

  async hash(path: string): Promise<string | undefined> {
    await this.#enter("hash", path);
    const data = this.files.get(path);
    return data && sha256(data);
  }

  async publish(tempPath: string, destination: string): Promise<void> {
    await this.#enter("publish", tempPath, destination);
    const data = this.files.get(tempPath);
    if (!data) throw new TransportError(`"${tempPath}" is not there`, "failed");
    this.files.delete(tempPath);
    this.files.set(destination, data);
    this.#setMode(destination, this.modes.get(tempPath));
    this.modes.delete(tempPath);
  }

  async removeParts(key: string, count?: number): Promise<void> {
    await this.#enter("removeParts", key, ...count === undefined ? [] : [count]);
    this.parts.delete(key);
  }

  async remove(path: string): Promise<void> {
    await this.#enter("remove", path);
    this.files.delete(path);
  }

  async freeSpace(destination: string): Promise<SpaceInfo | undefined> {
    await this.#enter("freeSpace", destination);
    return this.freeBytes === undefined ? undefined : { freeBytes: this.freeBytes };
  }

  probe(): Promise<ProbeItem[]> {
    return Promise.resolve([{ check: "fake", ok: true, detail: "in memory" }]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #store(tempPath: string, data: Uint8Array): Assembled {
    this.files.set(tempPath, data);
    return { tempPath, sha256: sha256(data), size: data.length };
  }
}

/** The sha256 of bytes, hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const whole = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.length;
  }
  return whole;
}
