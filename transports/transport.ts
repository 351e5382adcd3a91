/**
 * The transport interface: the few semantic operations the engine needs from a
 * vessel. The engine owns every policy (temp name, verify, atomic publish,
 * retries); a transport only does I/O and classifies its errors.
 *
 * Paths given to a transport are absolute vessel paths ("/srv/inbox/a.bin").
 * A delivery `key` names the delivery's own part directory under the
 * vessel's TempDir; it is unique per shore and delivery and safe as a file
 * name (`[A-Za-z0-9_-]+`).
 *
 * @module
 */

/** What a transport can do beyond the required contract. */
export interface TransportCapabilities {
  /**
   * How many parts of one delivery may be put at the same time: the most
   * connections the vessel may use (see {@linkcode ConnectionPool}).
   */
  readonly parallelParts: number;
  /** How many deliveries this vessel should run at the same time. */
  readonly parallelDeliveries: number;
}

/** A file assembled from parts under its hidden temp name, not yet published. */
export interface Assembled {
  /** Absolute vessel path of the hidden temp file beside the destination. */
  readonly tempPath: string;
  /** Lower-case hex sha256 of the assembled bytes, computed on the vessel. */
  readonly sha256: string;
  /** Size in bytes of the assembled file. */
  readonly size: number;
}

/**
 * An assembly that runs while its parts are still being uploaded: parts are
 * appended to the temp file (and hashed) in order as they become whole on the
 * vessel, so little work is left once the last part arrives. Returned by
 * {@linkcode Transport.startAssembly}; the caller must end it with `finish()`
 * or `abort()`.
 */
export interface Assembly {
  /**
   * Part `index` is whole on the vessel. Parts may be announced in any order
   * and more than once; they are consumed in order `0..count-1`.
   *
   * @throws {RangeError} if `index` is not an integer in `0..count-1`.
   */
  partReady(index: number): void;
  /**
   * Resolves once all `count` parts were announced and assembled, like
   * {@linkcode Transport.assemble}: the temp file is durable, and its sha256
   * and size are what the vessel holds. Rejects like {@linkcode assembleAll}; on
   * rejection nothing is left at the temp path. Calling it again returns the
   * same outcome.
   */
  finish(): Promise<Assembled>;
  /**
   * Stops the assembly and removes the temp file, also after `finish()`
   * resolved (an unpublished temp file goes; a published one is not there any
   * more). `finish()` then rejects. Never throws; safe to call twice.
   */
  abort(): Promise<void>;
}

/** One line of `contentmonster check` for a vessel. */
export interface ProbeItem {
  /** What was checked, e.g. "connect", "host key", "posix-rename". */
  readonly check: string;
  readonly ok: boolean;
  /** The finding: a value when it passed, the reason when it failed. */
  readonly detail: string;
}

/** Free space on the vessel, in bytes. */
export interface SpaceInfo {
  readonly freeBytes: number;
}

/**
 * A vessel's connections, which the engine sizes to the link: on a lossy or
 * long link each TCP stream is slow, and more of them carry more; on a
 * fast link more only cost CPU.
 */
export interface ConnectionPool {
  /** Most connections the vessel may use (its `Connections`). */
  readonly max: number;
  /** Whether the count adapts to the link (`Connections = auto`); otherwise it stays `max`. */
  readonly adaptive: boolean;
  /** Connections open now. */
  readonly open: number;
  /** Bytes of file data the vessel has acknowledged so far, over all connections. */
  readonly acknowledgedBytes: number;
  /**
   * The link's round trip as the quickest replies tell it, once known (or,
   * until one comes, as a slow first login told it).
   */
  readonly roundTripMs: number | undefined;
  /**
   * Uses at most `count` connections from now on (1..max): more are opened
   * as calls need them, a few at a time; those beyond close once idle.
   */
  use(count: number): void;
}

/** One connection to one vessel. Methods may be called concurrently. */
export interface Transport {
  /** The vessel's name, for messages. */
  readonly vessel: string;
  readonly capabilities: TransportCapabilities;
  /** Present when the transport's connection count can follow the link. */
  readonly connections?: ConnectionPool;

  /**
   * Creates the delivery's part directory and the destination's parent
   * directories. No error if they exist already. TempDir and the part
   * directory are created private (0700); an existing TempDir must be a real
   * directory of the login user that group and others cannot write, else this
   * throws an `"unsafe"` {@linkcode TransportError} saying how to fix it.
   * Every file a transport creates in TempDir or beside a destination is
   * created exclusively (never through a link, never truncating something
   * there) with mode 0600.
   *
   * Returns the parts already there, as {@linkcode listParts} does: none
   * when the part directory is new (then without asking the vessel again).
   */
  prepare(key: string, destination: string): Promise<Set<number>>;

  /**
   * Indices of the whole parts present for `key` (`N.part`; a `N.part.tmp`
   * never counts). Empty when the part directory does not exist.
   */
  listParts(key: string): Promise<Set<number>>;

  /**
   * Stores part `index` atomically: written to `N.part.tmp`, then renamed to
   * `N.part`, so a present part is always whole. Putting a part again
   * replaces it. Parts may be put in any order. The part directory must
   * have been prepared. `data` (bytes, or a {@linkcode PartData} read as
   * the part is sent) is not used once the returned promise has settled, so
   * the caller may reuse its buffer or close its file. `bytesAfter` says how
   * many bytes of the file are still to be put after this part, so a
   * transport whose connections carry different rates can keep the last
   * parts off slow ones (0, or left out: none). `ending`, if the transport
   * knows that moment, hears that the part's last bytes are leaving for the
   * vessel, before the part is stored: the next part may start behind them.
   */
  putPart(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    bytesAfter?: number,
    ending?: () => void,
  ): Promise<void>;

  /**
   * Sends a spare copy of part `index`, whose {@linkcode putPart} is still
   * under way, on a connection that is idle now, if the one carrying it
   * has stalled: at the end of a file, a part stuck on a stream that
   * stopped is the whole file's tail (issue 8). Written to
   * `N.part.spare.tmp` and renamed to `N.part` like a part, so whichever
   * copy ends first makes the part whole, and the other's rename replaces
   * it with the same bytes. Returns `undefined`, having sent nothing, when
   * the first copy's stream still answers or no connection is idle; else
   * the copy's outcome. Optional: a transport with one stream has no use
   * for it.
   */
  putSparePart?(
    key: string,
    index: number,
    data: Uint8Array | PartData,
    bytesAfter?: number,
  ): Promise<void> | undefined;

  /**
   * Starts assembling parts `0..count-1` of `key` into `tempPathFor(key,
   * destination)` while they are still being put: announce each part with
   * {@linkcode Assembly.partReady} once its `putPart` resolved. Same outcome
   * and errors as {@linkcode assembleAll}, which is this plus announcing every
   * part (see {@linkcode assembleAll}). A temp file left by an earlier try is
   * replaced. The part directory must have been prepared. `mode` as for
   * {@linkcode putWhole}. A part announced but not there rejects with
   * `"part-missing"`; an assembly that makes no progress for a few
   * `Timeout`s while it has parts to consume rejects with `"connection"`.
   */
  startAssembly(key: string, count: number, destination: string, mode?: number): Assembly;

  /**
   * Stores a file that is one part: writes `data` straight to
   * `tempPathFor(key, destination)` (replacing a file there; no part
   * directory), creating the destination's parent directories as needed,
   * makes it durable and returns the sha256 and size of what the vessel then
   * holds there. It is readable by the login user only (0600) until every
   * byte is written; then, with `mode`, it has those permission bits (`0o777`
   * at most; the source's, as scp does), set on the open file. On error
   * nothing is left at the temp path (when the vessel can still be reached).
   */
  putWhole(key: string, destination: string, data: Uint8Array, mode?: number): Promise<Assembled>;

  /** The sha256 of a vessel file, or `undefined` if it does not exist. */
  hash(path: string): Promise<string | undefined>;

  /**
   * Renames `tempPath` onto `destination` atomically, replacing a file that is
   * there. Never deletes the destination first. The mode was set when the
   * file was written (see {@linkcode putWhole}): a change of mode by name here
   * would follow a link swapped in at the temp name.
   */
  publish(tempPath: string, destination: string): Promise<void>;

  /**
   * Removes the part directory of `key`. No error if it does not exist.
   * With `count`, the parts are taken to be `0..count-1` (the transport may
   * then remove them without listing them first, and lists only when
   * something else is left).
   */
  removeParts(key: string, count?: number): Promise<void>;

  /** Removes one file. No error if it does not exist. */
  remove(path: string): Promise<void>;

  /** Free space where parts and `destination` go, if the vessel can tell. */
  freeSpace(destination: string): Promise<SpaceInfo | undefined>;

  /**
   * Checks the vessel for `contentmonster check`: connection, host key,
   * authentication, what the transport needs on the vessel, and that TempDir
   * and every destination directory are writable. Never throws: each failure
   * is one item with `ok: false`.
   */
  probe(destinations: readonly string[]): Promise<ProbeItem[]>;

  /**
   * Starts connecting, if nothing is connected or connecting, for work that
   * is about to come: the login then overlaps the daemon's start. Opens
   * `connections` at once (1 if not given; at most as many as the transport
   * may use), for an engine that will use that many from its start.
   * Resolves once the first login is under way (an `ssh` it runs has
   * started) or over, and never rejects: calls that follow wait for a login
   * still under way, and the next call reports one that failed rather than
   * log in again.
   */
  connectAhead?(connections?: number): Promise<void>;

  /** Closes connections. Pending calls reject. Safe to call twice. */
  close(): Promise<void>;

  /**
   * Optional: removes ContentMonster's own leftovers older than
   * `olderThanMs` (deliveries dropped because IgnoreDirs changed, the vessel
   * was removed or the database lost): part directories in TempDir named
   * like delivery keys ({@linkcode LEFTOVER_KEY}), except those in `keep`,
   * and `.contentmonster-*.tmp` files below `destinations`. Nothing is
   * followed through a symbolic link. TempDir is never created, and is held
   * to the rule {@linkcode Transport.prepare} holds it to (private to the
   * login user, below directories no one else can change): when it fails,
   * rejects with the same `"unsafe"` error and removes nothing, below
   * `destinations` neither. Resolves with how many it removed.
   */
  removeLeftovers?(options: LeftoverOptions): Promise<number>;
}

/**
 * The bytes of one part, read from the source while it is sent: a part in
 * flight then holds a few write requests in memory, not all of itself (on a
 * slow link with many connections, whole 10 MiB parts held hundreds of MiB).
 */
export interface PartData {
  readonly byteLength: number;
  /**
   * Fills `into` with the part's bytes from `offset` on (fewer at its end)
   * and resolves with the filled view of `into`. Rejects if the source no
   * longer has them. Calls may overlap; each gets its own bytes.
   */
  read(offset: number, into: Uint8Array): Promise<Uint8Array>;
}

/**
 * Bytes `offset..offset+length-1` of `data`: a view of it when it is bytes,
 * else read into `scratch` (at least `length` long).
 */
export function partBytes(
  data: Uint8Array | PartData,
  offset: number,
  length: number,
  scratch: () => Uint8Array,
): Uint8Array | Promise<Uint8Array> {
  if (data instanceof Uint8Array) return data.subarray(offset, offset + length);
  return data.read(offset, scratch().subarray(0, length));
}

/**
 * Bytes `0..length-1` of `data` in steps of at most `step` bytes: views of
 * `data` when it is bytes, else read into one buffer that each step reuses
 * (use a step before asking for the next).
 */
export async function* partChunks(
  data: Uint8Array | PartData,
  length = data.byteLength,
  step = 1 << 20,
): AsyncGenerator<Uint8Array> {
  let scratch: Uint8Array | undefined;
  for (let at = 0; at < length;) {
    const size = Math.min(step, length - at);
    const bytes = await partBytes(data, at, size, () => scratch ??= new Uint8Array(size));
    yield bytes;
    at += bytes.length;
  }
}

/** What {@linkcode Transport.removeLeftovers} removes. */
export interface LeftoverOptions {
  readonly olderThanMs: number;
  /** Delivery keys still in the store: their parts stay, however old. */
  readonly keep: ReadonlySet<string>;
  /** Destination roots to search for old temp files. */
  readonly destinations: readonly string[];
  /**
   * This shore's instance id (12 hex digits) and how old a leftover named for
   * another one must be: shores that share a vessel do not know each other's
   * queues, and one whose link was down for a day still has its parts there.
   */
  readonly others?: { readonly instanceId: string; readonly olderThanMs: number };
}

/**
 * How old a leftover must be to go, by its name (a part directory's
 * delivery key, or a temp file's name): `olderThanMs`, or longer when
 * another shore (another instance id) made it.
 */
export function leftoverAgeMs(name: string, options: LeftoverOptions): number {
  const { others } = options;
  const ours = !others || name.startsWith(`${others.instanceId}-`) ||
    name.startsWith(`${TEMP_PREFIX}${others.instanceId}-`);
  return ours ? options.olderThanMs : Math.max(options.olderThanMs, others.olderThanMs);
}

/**
 * The shape of a delivery key: a shore's 12-hex instance id, a dash, a
 * delivery id, and after its first publish a dash and the count of them.
 */
export const LEFTOVER_KEY = /^[0-9a-f]{12}-[0-9]+(-[0-9]+)?$/;

/** The shape of a temp name {@linkcode tempPathFor} makes. */
export const LEFTOVER_TEMP = /^\.contentmonster-[0-9a-f]{12}-[0-9]+(-[0-9]+)?\.tmp$/;

/** Why a transport call failed, so the engine can decide what to do. */
export type TransportErrorCode =
  /** Network, timeout, closed connection: reconnect and retry. */
  | "connection"
  /** A part asked for is not on the vessel: upload it again. */
  | "part-missing"
  /** The vessel's disk is full: retry later. */
  | "no-space"
  /** Host key unknown or changed: refuse until the operator acts. */
  | "host-key"
  /** Authentication refused. */
  | "auth"
  /** The vessel lacks something required (posix-rename, sftp, cat). */
  | "unsupported"
  /**
   * The vessel's TempDir is not private to the login user (a symlink, owned
   * by someone else, writable by group or others): refuse until the operator acts.
   */
  | "unsafe"
  /** Any other failure of one operation (permission denied, not a dir). */
  | "failed";

const RETRYABLE: ReadonlySet<TransportErrorCode> = new Set([
  "connection",
  "part-missing",
  "no-space",
  "failed",
]);

/** An error from a transport, classified by {@linkcode TransportErrorCode}. */
export class TransportError extends Error {
  /** The classification of the failure. */
  readonly code: TransportErrorCode;
  /** Whether trying the same operation again later may succeed. */
  readonly retryable: boolean;

  constructor(
    message: string,
    code: TransportErrorCode,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(message, { cause: options?.cause });
    this.name = "TransportError";
    this.code = code;
    this.retryable = options?.retryable ?? RETRYABLE.has(code);
  }
}

/** Name of the temp part file; renamed to {@linkcode partName} when whole. */
export function partTempName(index: number): string {
  return `${index}.part.tmp`;
}

/** Name of the temp file of a part's spare copy (see {@linkcode Transport.putSparePart}). */
export function spareTempName(index: number): string {
  return `${index}.part.spare.tmp`;
}

/** Name of a whole part file in a delivery's part directory. */
export function partName(index: number): string {
  return `${index}.part`;
}

/** Parses a part file name (`N.part`) to its index, or `undefined`. */
export function parsePartName(name: string): number | undefined {
  const match = /^(0|[1-9][0-9]*)\.part$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

/** Prefix of every temp name ContentMonster creates beside a destination. */
export const TEMP_PREFIX = ".contentmonster-";

/**
 * The hidden temp name beside `destination` that a delivery assembles into.
 * Short and fixed-length so any valid destination name keeps a valid temp name.
 */
export function tempPathFor(key: string, destination: string): string {
  const slash = destination.lastIndexOf("/");
  return `${destination.slice(0, slash + 1)}${TEMP_PREFIX}${key}.tmp`;
}

/** The parent directory of an absolute vessel path. */
export function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

/** Joins absolute vessel path segments with single slashes. */
export function joinPath(...segments: string[]): string {
  return segments.join("/").replace(/\/{2,}/g, "/");
}

/** Where a transport writes its log lines; the engine's logger fits. */
export interface TransportLogger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

/** A logger that drops every line, for transports built without one (tests, benches). */
export const silentLogger: TransportLogger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
};

/**
 * Concatenates parts `0..count-1` of `key`, all already whole on the vessel,
 * in order into `tempPathFor(key, destination)`, makes it durable and returns
 * its sha256 and size: {@linkcode Transport.startAssembly} with every part
 * announced at once. If a part is missing it rejects with a retryable
 * {@linkcode TransportError} coded `"part-missing"`, and nothing is left at the
 * temp path or the destination; on any error nothing is left at the temp path.
 */
export async function assembleAll(
  transport: Transport,
  key: string,
  count: number,
  destination: string,
  mode?: number,
): Promise<Assembled> {
  const assembly = transport.startAssembly(key, count, destination, mode);
  for (let index = 0; index < count; index++) assembly.partReady(index);
  return await assembly.finish();
}
