/**
 * The local transport: a vessel whose `/` lies at a shore path (`Root`), for
 * tests and for mounted targets (NFS, USB disks). Same semantics as SFTP.
 */
import { createHash } from "node:crypto";
import { errorMessage } from "../lib/error_message.ts";
import {
  type Assembled,
  type Assembly,
  joinPath,
  LEFTOVER_KEY,
  LEFTOVER_TEMP,
  leftoverAgeMs,
  type LeftoverOptions,
  parentOf,
  parsePartName,
  partChunks,
  type PartData,
  partName,
  partTempName,
  type ProbeItem,
  type SpaceInfo,
  tempPathFor,
  type Transport,
  type TransportCapabilities,
  TransportError,
  type TransportErrorCode,
} from "./transport.ts";
import { ignoreNotFound, LocalAssembly, writeAll } from "./_local_assembly.ts";
import {
  createPrivateFile,
  directoryStat,
  localLookup,
  makePrivateDirectory,
  setModeOf,
} from "./_local_files.ts";
import { ANCESTOR_DIR_MODE, judgeTempDir, mustBePrivate, readyAncestors } from "./private_dir.ts";

const COPY_BUFFER = 1 << 20;

/** A vessel whose `/` lies at a shore path. */
export interface LocalVessel {
  readonly name: string;
  /** The shore path where the vessel's `/` lies. */
  readonly root?: string;
  /** Absolute vessel path where parts are uploaded. */
  readonly tempDir: string;
  /** Whether to fsync a file before publishing it. */
  readonly fsync: boolean;
}

/** A transport that writes below a local directory. */
export class LocalTransport implements Transport {
  readonly vessel: string;
  readonly capabilities: TransportCapabilities = { parallelParts: 2, parallelDeliveries: 4 };
  readonly #root: string;
  readonly #tempDir: string;
  readonly #fsync: boolean;
  /** Whether the directories above TempDir passed {@linkcode checkAncestors}. */
  #ancestorsChecked = false;

  constructor(vessel: LocalVessel) {
    if (!vessel.root) throw new TypeError(`Vessel "${vessel.name}" has no Root`);
    this.vessel = vessel.name;
    this.#root = vessel.root.replace(/\/+$/, "");
    this.#tempDir = vessel.tempDir;
    this.#fsync = vessel.fsync;
  }

  #local(vesselPath: string): string {
    if (!vesselPath.startsWith("/")) {
      throw new TypeError(`Vessel path "${vesselPath}" is not absolute`);
    }
    return this.#root + vesselPath;
  }

  #partDir(key: string): string {
    return this.#local(joinPath(this.#tempDir, key));
  }

  #fail(action: string, error: unknown): TransportError {
    return new TransportError(
      `Cannot ${action} on vessel "${this.vessel}": ${errorMessage(error)}`,
      classify(error),
      { cause: error },
    );
  }

  async prepare(key: string, destination: string): Promise<Set<number>> {
    try {
      await this.#ensureTempDir();
      await this.#privateDirectory(joinPath(this.#tempDir, key));
      await Deno.mkdir(this.#local(parentOf(destination)), { recursive: true });
    } catch (error) {
      if (error instanceof TransportError) throw error;
      throw this.#fail(`prepare "${key}" for "${destination}"`, error);
    }
    return await this.listParts(key);
  }

  /**
   * Creates TempDir (0700) or checks the one there, and readies the way to it
   * (see {@linkcode readyAncestors}), up to this machine's `/` (Root's
   * directories too): judged by the first call (only root or we can change
   * them once they pass), and again whenever some were missing.
   */
  async #ensureTempDir(): Promise<void> {
    await readyAncestors(this.#local(this.#tempDir), {
      vessel: this.vessel,
      uid: Deno.uid() ?? -1,
      lookup: localLookup,
      passed: this.#ancestorsChecked,
      makeParents: (dir) => Deno.mkdir(dir, { recursive: true, mode: ANCESTOR_DIR_MODE }),
    });
    this.#ancestorsChecked = true;
    await this.#privateDirectory(this.#tempDir);
  }

  /** Creates `dir` (0700) or checks that the one there is private to us. */
  async #privateDirectory(dir: string): Promise<void> {
    const local = this.#local(dir);
    await makePrivateDirectory(local);
    mustBePrivate(dir, directoryStat(await Deno.lstat(local)), {
      vessel: this.vessel,
      uid: Deno.uid() ?? -1,
    });
  }

  async listParts(key: string): Promise<Set<number>> {
    const indices = new Set<number>();
    try {
      for await (const entry of Deno.readDir(this.#partDir(key))) {
        const index = parsePartName(entry.name);
        if (index !== undefined && entry.isFile) indices.add(index);
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return indices;
      throw this.#fail(`list parts of "${key}"`, error);
    }
    return indices;
  }

  async putPart(key: string, index: number, data: Uint8Array | PartData): Promise<void> {
    const dir = this.#partDir(key);
    const temp = `${dir}/${partTempName(index)}`;
    try {
      {
        using file = await createPrivateFile(temp);
        for await (const bytes of partChunks(data)) await writeAll(file, bytes);
      }
      await Deno.rename(temp, `${dir}/${partName(index)}`);
    } catch (error) {
      await Deno.remove(temp).catch(() => {});
      throw this.#fail(`put part ${index} of "${key}"`, error);
    }
  }

  startAssembly(key: string, count: number, destination: string, mode?: number): Assembly {
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new RangeError(`Cannot assemble "${destination}" from ${count} parts`);
    }
    const dir = this.#partDir(key);
    const tempPath = tempPathFor(key, destination);
    const where = `"${destination}" on vessel "${this.vessel}"`;
    return new LocalAssembly(count, tempPath, this.#local(tempPath), {
      fsync: this.#fsync,
      mode,
      where,
      open: async (index) => {
        try {
          return await Deno.open(`${dir}/${partName(index)}`);
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) throw error;
          throw new TransportError(
            `Cannot assemble ${where}: part ${index} of "${key}" is missing`,
            "part-missing",
            { cause: error },
          );
        }
      },
      fail: (error) => this.#fail(`assemble "${destination}"`, error),
    });
  }

  async putWhole(
    key: string,
    destination: string,
    data: Uint8Array,
    mode?: number,
  ): Promise<Assembled> {
    const tempPath = tempPathFor(key, destination);
    const local = this.#local(tempPath);
    try {
      // Unlink first, so a writer left from an earlier try cannot reach the new file.
      await Deno.remove(local).catch(ignoreNotFound);
      const file = await createPrivateFile(local).catch(async (error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        await Deno.mkdir(this.#local(parentOf(destination)), { recursive: true });
        return await createPrivateFile(local);
      });
      try {
        await writeAll(file, data);
        if (mode !== undefined) await setModeOf(file, local, mode);
        if (this.#fsync) await file.sync();
        await file.seek(0, Deno.SeekMode.Start);
        const { sha256, size } = await hashFile(file, data.byteLength);
        return { tempPath, sha256, size };
      } finally {
        file.close();
      }
    } catch (error) {
      await Deno.remove(local).catch(() => {});
      throw this.#fail(`put "${destination}" whole`, error);
    }
  }

  async hash(path: string): Promise<string | undefined> {
    try {
      using file = await Deno.open(this.#local(path));
      return (await hashFile(file, (await file.stat()).size)).sha256;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw this.#fail(`hash "${path}"`, error);
    }
  }

  async publish(tempPath: string, destination: string): Promise<void> {
    try {
      await Deno.rename(this.#local(tempPath), this.#local(destination));
      if (this.#fsync) {
        // The rename is durable once the directory's entries are: a power loss must not lose
        // a file the shore has already moved to processed/.
        using dir = await Deno.open(this.#local(parentOf(destination)));
        await dir.sync();
      }
    } catch (error) {
      throw this.#fail(`publish "${destination}"`, error);
    }
  }

  async removeParts(key: string): Promise<void> {
    try {
      // A link planted as the part directory goes itself; what it points to stays.
      if ((await Deno.lstat(this.#partDir(key))).isSymlink) {
        await Deno.remove(this.#partDir(key));
        return;
      }
      await Deno.remove(this.#partDir(key), { recursive: true });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw this.#fail(`remove parts of "${key}"`, error);
      }
    }
  }

  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(this.#local(path));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw this.#fail(`remove "${path}"`, error);
    }
  }

  freeSpace(_destination: string): Promise<SpaceInfo | undefined> {
    // Deno has no statvfs; a full disk still shows as a "no-space" error.
    return Promise.resolve(undefined);
  }

  async probe(destinations: readonly string[]): Promise<ProbeItem[]> {
    const items: ProbeItem[] = [];
    try {
      const info = await Deno.stat(this.#root);
      items.push({
        check: "root",
        ok: info.isDirectory,
        detail: info.isDirectory ? this.#root : `"${this.#root}" is not a directory`,
      });
    } catch (error) {
      items.push({ check: "root", ok: false, detail: errorMessage(error) });
      return items;
    }
    try {
      await this.#ensureTempDir();
      items.push(await this.#probeWritable("TempDir", this.#tempDir));
    } catch (error) {
      const detail = error instanceof TransportError
        ? error.message
        : `"${this.#tempDir}": ${errorMessage(error)}`;
      items.push({ check: "TempDir", ok: false, detail });
    }
    for (const dir of destinations) items.push(await this.#probeWritable(`writable ${dir}`, dir));
    return items;
  }

  async #probeWritable(check: string, dir: string): Promise<ProbeItem> {
    const probe = this.#local(joinPath(dir, `.contentmonster-probe-${crypto.randomUUID()}`));
    try {
      await Deno.mkdir(this.#local(dir), { recursive: true });
      (await createPrivateFile(probe)).close();
      await Deno.remove(probe);
      return { check, ok: true, detail: dir };
    } catch (error) {
      return { check, ok: false, detail: `"${dir}": ${errorMessage(error)}` };
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  async removeLeftovers(options: LeftoverOptions): Promise<number> {
    const old = (info: Deno.FileInfo, name: string) =>
      (info.mtime?.getTime() ?? Infinity) < Date.now() - leftoverAgeMs(name, options);
    let removed = 0;
    const tempDir = this.#local(this.#tempDir);
    // A vessel judged unsafe gets no cleanup at all, below destinations neither: deliveries
    // to it are refused too, whoever could plant in TempDir may have planted there as well,
    // and the error tells the operator what to fix.
    const there = await judgeTempDir(tempDir, {
      vessel: this.vessel,
      uid: Deno.uid() ?? -1,
      lookup: localLookup,
      shownAs: this.#tempDir,
    });
    for (const entry of there ? await listQuietly(tempDir) : []) {
      if (!LEFTOVER_KEY.test(entry.name) || options.keep.has(entry.name)) continue;
      const path = `${tempDir}/${entry.name}`;
      const info = await Deno.lstat(path);
      if (!old(info, entry.name)) continue;
      await Deno.remove(path, { recursive: info.isDirectory });
      removed++;
    }
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await listQuietly(dir)) {
        const path = `${dir}/${entry.name}`;
        if (entry.isDirectory) await walk(path);
        else if (
          entry.isFile && LEFTOVER_TEMP.test(entry.name) &&
          old(await Deno.lstat(path), entry.name)
        ) {
          await Deno.remove(path);
          removed++;
        }
      }
    };
    for (const destination of options.destinations) await walk(this.#local(destination));
    return removed;
  }
}

/** A directory's entries (symlinks not followed), `[]` if it cannot be read. */
async function listQuietly(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return [];
  }
}

/**
 * The sha256 and size of the rest of `file`, read with a buffer sized for
 * `sizeHint` bytes: a 1 MiB buffer per small file is most of the garbage a
 * queue of small files makes.
 */
async function hashFile(
  file: Deno.FsFile,
  sizeHint = COPY_BUFFER,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(Math.min(COPY_BUFFER, Math.max(1 << 16, sizeHint + 1)));
  let size = 0;
  for (let read; (read = await file.read(buffer)) !== null;) {
    hash.update(buffer.subarray(0, read));
    size += read;
  }
  return { sha256: hash.digest("hex"), size };
}

function classify(error: unknown): TransportErrorCode {
  const code = (error as { code?: string })?.code;
  if (code === "ENOSPC" || code === "EDQUOT" || /no space left/i.test(errorMessage(error))) {
    return "no-space";
  }
  return "failed";
}
