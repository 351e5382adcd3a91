/**
 * One delivery: one file to one vessel. Parts are uploaded (only those the
 * vessel lacks), assembled on the vessel, verified against the source's
 * sha256 and renamed into place; a file that changed or vanished meanwhile is
 * never published as a mix.
 */
import { createHash } from "node:crypto";
import type { DirectoryConfig } from "../config/types.ts";
import type { DeliveryRecord, FileRecord, Store } from "../store/store.ts";
import {
  type Assembled,
  type SpaceInfo,
  tempPathFor,
  type Transport,
  TransportError,
} from "../../transports/transport.ts";
import { failpoint } from "./failpoint.ts";
import { EndGame } from "./end_game.ts";
import { type PartOutcome, PARTS_PER_CONNECTION, type PartWindow } from "./part_window.ts";
import {
  openPart,
  partCount,
  partLength,
  partSizeFor,
  readPart,
  sameVersion,
  SourceChangedError,
  type SourcePart,
  statSource,
} from "./source.ts";

/** How a delivery attempt ended when it did not throw. */
export type DeliveryOutcome =
  /** The vessel holds a verified copy. */
  | "delivered"
  /** The source vanished: remote leftovers removed, delivery dropped. */
  | "dropped"
  /** The source changed: the file was queued again as a new version. */
  | "changed";

/** What a delivery needs from the engine. */
export interface DeliveryContext {
  readonly store: Store;
  readonly transport: Transport;
  /** The operator's ChunkSize: the largest part (see {@linkcode partSizeFor}). */
  readonly chunkSize: number;
  readonly signal: AbortSignal;
  /**
   * The source's sha256 for this version (shared by all vessels); with
   * `fresh`, read from the source again instead of any cached hash.
   */
  fileHash(file: FileRecord, sourcePath: string, options?: { fresh?: boolean }): Promise<string>;
  /** Waits until `bytes` may be sent (the vessel's BandwidthLimit). */
  pace?(bytes: number, signal: AbortSignal): Promise<void>;
  /** The vessel's limit on parts in flight, shared by its deliveries. */
  readonly window?: PartWindow;
  /** Hears what the attempt sends, for progress lines and metrics. */
  readonly progress?: DeliveryProgress;
}

/** What one delivery attempt reports while it runs. */
export interface DeliveryProgress {
  /**
   * The attempt sends `parts` parts of `partSize` bytes (the last may be
   * shorter), of which `present` are on the vessel already.
   */
  planned(parts: number, present: ReadonlySet<number>, partSize: number): void;
  /**
   * Part `index` of a file of several parts starts uploading, on a vessel
   * that just answered (its part directory is prepared and listed).
   */
  sending(index: number): void;
  /** Part `index` (`bytes` long) is whole on the vessel; `bySpare` if its spare copy ended first. */
  sent(index: number, bytes: number, bySpare?: boolean): void;
  /** Part `index`'s stream stopped at the end of its file: a spare copy leaves on an idle connection. */
  spareSent?(index: number): void;
}

/** How soon a part the transport would not give a spare copy is asked about again. */
const SPARE_RETRY_MS = 500;

/**
 * Files from this size on are worth a free-space round trip and take a place
 * in the part window (which bounds the memory and the losses of large
 * parts); smaller ones are bounded by the deliveries in flight.
 */
const LARGE_FILE_BYTES = 1 << 20;

/** The source path on the shore and the destination path on the vessel. */
export function deliveryPaths(
  directory: DirectoryConfig,
  relpath: string,
): { source: string; destination: string } {
  return {
    source: `${directory.location}/${relpath}`,
    destination: `${directory.destination.replace(/\/+$/, "")}/${relpath}`,
  };
}

/**
 * The name of a delivery's part directory on its vessel, and of its temp
 * file: unique for the instance's life, since the store never gives a
 * delivery id again, and new after each publish begun. A publish's rename
 * sent on a connection the shore then gave up on may still land, late (an
 * orphaned socket retransmits what it held): had the next try written the
 * same temp name, that rename would have published its half-written file.
 */
export function deliveryKey(store: Store, deliveryId: number, publishes: number): string {
  const key = `${store.instanceId}-${deliveryId}`;
  return publishes === 0 ? key : `${key}-${publishes}`;
}

/** Runs one attempt of a delivery. Throws on failure; the caller backs off. */
export async function runDelivery(
  deliveryContext: DeliveryContext,
  delivery: DeliveryRecord,
  directory: DirectoryConfig,
): Promise<DeliveryOutcome> {
  const { store, transport } = deliveryContext;
  const { file } = delivery;
  // From here on `chunkSize` is this file's part size.
  const context = {
    ...deliveryContext,
    chunkSize: partSizeFor(
      file.size,
      deliveryContext.chunkSize,
      transport.capabilities.parallelParts,
    ),
  };
  const { source, destination } = deliveryPaths(directory, file.relpath);
  const key = deliveryKey(store, delivery.id, delivery.publishes);
  const count = partCount(file.size, context.chunkSize);
  // The copy the last publish begun named: its rename may still land, late (see deliveryKey).
  const earlierKey = deliveryKey(store, delivery.id, delivery.publishes - 1);
  const earlier = delivery.publishes > 0 ? tempPathFor(earlierKey, destination) : undefined;
  /**
   * The earlier copy's removal, started beside the upload and awaited before this try's publish:
   * its late rename could put an older version over the one published here. Once the removal is
   * answered that rename fails; before, it publishes an older verified copy this one replaces.
   */
  let earlierRemoved: Promise<void> | undefined;
  const removeEarlier = () => {
    earlierRemoved = transport.remove(earlier!);
    earlierRemoved.catch(() => {}); // awaited below; an early failure must not go unhandled
  };
  // A delivery of the file's next version keeps its publishes and cannot tell whether its last
  // one was answered: an absent name's removal costs a request, not a round trip.
  if (earlier !== undefined && delivery.state !== "publishing") removeEarlier();

  const sourceChanged = async (): Promise<DeliveryOutcome> => {
    const now = statSource(directory.location, file.relpath);
    if (now === undefined) {
      await transport.removeParts(key);
      await transport.remove(tempPathFor(key, destination));
      // Else its late rename could put the vanished version over a file queued later here.
      if (earlier !== undefined) await (earlierRemoved ?? transport.remove(earlier));
      store.dropDelivery(delivery.id);
      return "dropped";
    }
    if (!sameVersion(now, file)) store.fileChanged(file.id, now.size, now.mtimeMs, now);
    return "changed";
  };

  const sourceStat = statSource(directory.location, file.relpath);
  if (!sameVersion(sourceStat, file)) return await sourceChanged();
  // A one-part file is hashed from the bytes read to send it (checked to be the queued version
  // before and after): reading it again only to hash it doubled the shore's work per small file.
  const hashOfSent = count === 1 && delivery.state !== "publishing" && file.sha256 === null;
  let expectedHash = hashOfSent ? undefined : context.fileHash(file, source);
  expectedHash?.catch(() => {}); // awaited below; an early failure must not go unhandled

  try {
    if (delivery.state === "publishing") {
      // A crash, or a connection dropped, between the store's commit and the rename's answer:
      // the vessel may hold the file already, or still hold the copy that rename named. That
      // copy is published again; a new one goes under a new name (see deliveryKey).
      const [remote, copy, expected] = await Promise.all([
        transport.hash(destination),
        transport.hash(earlier!),
        expectedHash!,
      ]);
      // Its parts are under the key of the publish begun (see deliveryKey), not this try's.
      const removeEarlierParts = () =>
        count > 1 ? transport.removeParts(earlierKey, count) : undefined;
      if (remote === expected) {
        await Promise.all([
          // The vessel held these bytes before, say, and the rename is yet to land: once this
          // file is finished, it would land over a later file of this name.
          copy !== undefined ? transport.remove(earlier!) : undefined,
          removeEarlierParts(),
        ]);
        return finish();
      }
      if (copy === expected) {
        await Promise.all([transport.publish(earlier!, destination), removeEarlierParts()]);
        return await finish(true);
      }
      removeEarlier();
      await removeEarlierParts();
    }

    let assembled: Assembled;
    if (count === 1) {
      // One part goes straight to its temp name; parts of an earlier, larger version go.
      if (delivery.partsVersion !== null) {
        await transport.removeParts(key);
        store.startParts(delivery.id, null);
      }
      if (file.size >= LARGE_FILE_BYTES) {
        checkFreeSpace(context, destination, file.size, 1, await transport.freeSpace(destination));
      }
      context.progress?.planned(1, new Set(), context.chunkSize);
      const sent = await putWhole(
        context,
        delivery,
        source,
        directory.location,
        key,
        destination,
        sourceStat?.mode,
      );
      assembled = sent.assembled;
      expectedHash ??= Promise.resolve(sent.sha256);
    } else {
      if (delivery.partsVersion !== file.version) {
        // No parts version means nothing was ever uploaded: startParts runs before any upload.
        if (delivery.partsVersion !== null) await transport.removeParts(key);
        store.startParts(delivery.id, file.version);
      }
      assembled = await uploadAndAssemble(
        context,
        delivery,
        source,
        directory.location,
        key,
        destination,
        count,
        sourceStat?.mode,
      );
    }
    const expected = await expectedHash!;
    if (assembled.sha256 !== expected || assembled.size !== file.size) {
      const now = statSource(directory.location, file.relpath);
      if (!now || !sameVersion(now, file)) {
        await transport.remove(assembled.tempPath);
        return await sourceChanged();
      }
      // The stat is unchanged, so the cached hash may belong to a replacement the stat could
      // not tell apart (Deno's ctime has whole seconds): hash the source once more.
      const fresh = await context.fileHash(file, source, { fresh: true });
      await transport.remove(assembled.tempPath);
      if (fresh !== expected) {
        // Vessels that hold the cached hash's bytes need this content too: a new version for
        // every vessel, not this one published and the others left with the old bytes.
        store.fileChanged(file.id, now.size, now.mtimeMs, now);
        return "changed";
      }
      if (count > 1) {
        await transport.removeParts(key);
        store.startParts(delivery.id, file.version);
      }
      throw new Error(
        `Verification of "${destination}" failed: vessel has sha256 ${assembled.sha256} ` +
          `(${assembled.size} bytes), source has ${fresh} (${file.size} bytes); sending again`,
      );
    }
    await earlierRemoved;
    if (!(await store.grouped(() => store.markPublishing(delivery.id, file.version, expected)))) {
      await transport.remove(assembled.tempPath);
      return "changed";
    }
    failpoint("before-publish");
    // The verified copy needs its parts no more: they go while it is published, a round trip
    // less per file (a publish that fails then sends them again).
    await Promise.all([
      transport.publish(assembled.tempPath, destination),
      count > 1 ? transport.removeParts(key, count) : undefined,
    ]);
    failpoint("after-publish");
    return await finish(count > 1);
  } catch (error) {
    if (error instanceof SourceChangedError) return await sourceChanged();
    throw error;
  }

  async function finish(partsRemoved = false): Promise<DeliveryOutcome> {
    if (!partsRemoved && (delivery.partsVersion !== null || count > 1)) {
      await transport.removeParts(key, count > 1 ? count : undefined);
    }
    const delivered = await store.grouped(() => store.markDelivered(delivery.id, file.version));
    return delivered ? "delivered" : "changed";
  }
}

function checkFreeSpace(
  context: DeliveryContext,
  destination: string,
  size: number,
  missingParts: number,
  space: SpaceInfo | undefined,
): void {
  if (space === undefined) return;
  // The missing parts plus the assembled copy must fit at the same time.
  const needed = Math.min(size, missingParts * context.chunkSize) + size;
  if (space.freeBytes < needed) {
    // This file does not fit; smaller ones may. Coded "failed", not the vessel-wide
    // "no-space" (which a write that fails on a full disk still gives): only this
    // delivery backs off, and the message says why.
    throw new TransportError(
      `Not enough space on vessel "${context.transport.vessel}" for "${destination}": ` +
        `${needed} bytes needed (its missing parts and the assembled copy), ` +
        `${space.freeBytes} free; this file waits, smaller ones go on`,
      "failed",
    );
  }
}

async function uploadParts(
  context: DeliveryContext,
  delivery: DeliveryRecord,
  source: string,
  location: string,
  key: string,
  missing: number[],
  onWhole: (index: number) => void,
): Promise<void> {
  const { file } = delivery;
  const queue = [...missing];
  const whole = new Set<number>();
  const allWhole = Promise.withResolvers<void>();
  // Spare copies double bytes: not on a link the operator capped (BandwidthLimit).
  const endGame = context.transport.putSparePart && !context.pace
    ? new EndGame(missing.length)
    : undefined;
  /** Replaced each time a copy of a part ends, which may leave a connection idle. */
  let copyEnded = Promise.withResolvers<void>();
  const spares: Promise<void>[] = [];

  const bytesAfter = (index: number, bytes: number) =>
    Math.max(0, file.size - index * context.chunkSize - bytes);
  const checkUnchanged = () => {
    // Changed while it was sent: stop sending parts of a version that cannot be published.
    const now = statSource(location, file.relpath);
    if (!sameVersion(now, file)) throw new SourceChangedError(source, now);
  };
  const sourceFailure = (data: SourcePart, error: unknown) =>
    data.failure instanceof SourceChangedError ? data.failure : error;
  /** The first copy of part `index` to end makes it whole; the other's end changes nothing. */
  const arrived = (index: number, bytes: number, bySpare = false) => {
    if (whole.has(index)) return;
    whole.add(index);
    endGame?.whole(index, performance.now());
    context.store.markPartDone(delivery.id, index);
    onWhole(index);
    failpoint("after-part");
    context.progress?.sent(index, bytes, bySpare);
    if (whole.size === missing.length) allWhole.resolve();
  };
  const ended = () => {
    copyEnded.resolve();
    copyEnded = Promise.withResolvers();
  };

  const worker = async () => {
    for (let index = queue.shift(); index !== undefined; index = queue.shift()) {
      context.signal.throwIfAborted();
      const ticket = await context.window?.acquire(
        context.signal,
        partLength(file.size, context.chunkSize, index),
      );
      let outcome: PartOutcome = "failed";
      let bytes: number;
      try {
        endGame?.started(index, performance.now());
        // Read as it is sent: a part in flight holds its write requests, not all of itself.
        using data = openPart(source, index, context.chunkSize, file);
        await context.pace?.(data.byteLength, context.signal);
        context.progress?.sending(index);
        await context.transport.putPart(
          key,
          index,
          data,
          bytesAfter(index, data.byteLength),
          () => ticket && context.window?.partEnding(ticket),
        ).catch((error) => Promise.reject(sourceFailure(data, error)));
        checkUnchanged();
        outcome = "whole";
        bytes = data.byteLength;
      } catch (error) {
        if (error instanceof TransportError && error.code === "connection") outcome = "lost";
        throw error;
      } finally {
        endGame?.ended(index);
        if (ticket !== undefined) context.window?.release(ticket, outcome);
        ended();
      }
      arrived(index, bytes);
    }
  };

  /**
   * Sends a spare copy of part `index` if a connection is idle; resolves
   * whether it did. Its failure fails nothing: the first copy carries on.
   */
  const sendSpare = (index: number): Promise<boolean> => {
    const decided = Promise.withResolvers<boolean>();
    spares.push((async () => {
      let sent = false;
      try {
        using data = openPart(source, index, context.chunkSize, file);
        const copy = context.transport.putSparePart!(
          key,
          index,
          data,
          bytesAfter(index, data.byteLength),
        );
        sent = copy !== undefined;
        decided.resolve(sent);
        if (!copy) return endGame!.unspared(index);
        context.progress?.spareSent?.(index);
        await copy.catch((error) => Promise.reject(sourceFailure(data, error)));
        checkUnchanged();
        arrived(index, data.byteLength, true);
      } catch {
        // The first copy's own outcome decides.
      } finally {
        decided.resolve(false);
        if (sent) ended();
      }
    })());
    return decided.promise;
  };

  /** Once every part has left, gives overdue parts spare copies on idle connections. */
  const playEndGame = async (game: EndGame, done: Promise<unknown>) => {
    let finished = false;
    done.finally(() => finished = true);
    while (!finished) {
      const nextEnd = copyEnded.promise;
      let refused = false;
      for (const index of queue.length === 0 ? game.overdue(performance.now()) : []) {
        game.spared(index);
        if (!(await sendSpare(index))) refused = true;
        if (finished) return;
      }
      // A part refused a spare (its stream still answers, or no connection is idle) is asked
      // about again a while later: its stream may stop meanwhile.
      const dueIn = refused
        ? SPARE_RETRY_MS
        : queue.length === 0
        ? game.nextDueIn(performance.now())
        : Infinity;
      const due = Promise.withResolvers<void>();
      const timer = Number.isFinite(dueIn) ? setTimeout(due.resolve, dueIn) : undefined;
      await Promise.race([nextEnd, due.promise, done]);
      clearTimeout(timer);
    }
  };

  // As many as the window could let go (it decides how many really do).
  const lanes = Math.max(
    1,
    Math.min(PARTS_PER_CONNECTION * context.transport.capabilities.parallelParts, queue.length),
  );
  const settled = Promise.allSettled(Array.from({ length: lanes }, worker)).then(
    async (results) => {
      // A spare may still make whole a part whose first copy failed.
      while (spares.length > 0) await Promise.allSettled(spares.splice(0));
      return results;
    },
  );
  if (missing.length === 0) allWhole.resolve();
  const done = Promise.race([allWhole.promise, settled]);
  if (endGame) void playEndGame(endGame, done);
  await done;
  // Every part is whole: the slower copies still under way end on their own.
  if (whole.size === missing.length) return;
  const failures = (await settled)
    .filter((result) => result.status === "rejected")
    .map((result) => (result as PromiseRejectedResult).reason);
  throw failures.find((error) => error instanceof SourceChangedError) ?? failures[0] ??
    new Error(`${missing.length - whole.size} parts of "${key}" were never whole`);
}

/**
 * A one-part file goes straight to its temp name: no part directory, no
 * assembly. Returns what the vessel holds and the sha256 of what was sent.
 */
async function putWhole(
  context: DeliveryContext,
  delivery: DeliveryRecord,
  source: string,
  location: string,
  key: string,
  destination: string,
  mode: number | undefined,
): Promise<{ assembled: Assembled; sha256: string }> {
  const { file } = delivery;
  const window = file.size >= LARGE_FILE_BYTES ? context.window : undefined;
  const ticket = await window?.acquire(context.signal, file.size);
  let outcome: PartOutcome = "failed";
  try {
    const data = await readPart(source, 0, context.chunkSize, file);
    const now = statSource(location, file.relpath);
    if (!sameVersion(now, file)) throw new SourceChangedError(source, now);
    await context.pace?.(data.length, context.signal);
    failpoint("before-assemble");
    const sha256 = createHash("sha256").update(data).digest("hex");
    const assembled = await context.transport.putWhole(key, destination, data, mode);
    failpoint("after-assemble");
    outcome = "whole";
    context.progress?.sent(0, data.length);
    return { assembled, sha256 };
  } catch (error) {
    if (error instanceof TransportError && error.code === "connection") outcome = "lost";
    throw error;
  } finally {
    if (ticket !== undefined) window?.release(ticket, outcome);
  }
}

/**
 * Uploads the parts the vessel lacks while it assembles them in order, so
 * little is left to do when the last part arrives.
 */
async function uploadAndAssemble(
  context: DeliveryContext,
  delivery: DeliveryRecord,
  source: string,
  location: string,
  key: string,
  destination: string,
  count: number,
  mode: number | undefined,
): Promise<Assembled> {
  const { transport } = context;
  // Free space is asked beside the preparation, not after it: a round trip less on a long link.
  const [present, space] = await Promise.all([
    transport.prepare(key, destination),
    delivery.file.size >= LARGE_FILE_BYTES ? transport.freeSpace(destination) : undefined,
  ]);
  checkFreeSpace(context, destination, delivery.file.size, count - present.size, space);
  context.progress?.planned(count, present, context.chunkSize);
  const assembly = transport.startAssembly(key, count, destination, mode);
  try {
    const missing = [];
    for (let index = 0; index < count; index++) {
      if (present.has(index)) assembly.partReady(index);
      else missing.push(index);
    }
    await uploadParts(
      context,
      delivery,
      source,
      location,
      key,
      missing,
      (index) => assembly.partReady(index),
    );
    failpoint("before-assemble");
    const assembled = await assembly.finish();
    failpoint("after-assemble");
    return assembled;
  } catch (error) {
    await assembly.abort();
    // The vessel lost parts (rebooted, TempDir wiped): forget them so the next try sends them.
    if (error instanceof TransportError && error.code === "part-missing") {
      context.store.startParts(delivery.id, delivery.file.version);
    }
    throw error;
  }
}
