/**
 * A fault-injecting TCP proxy for the fault-injection tests ("unstable links
 * and crashes"). It listens on 127.0.0.1, forwards every connection to one
 * target, and can cut, stall, throttle, delay or refuse connections at run
 * time.
 *
 * Sockets are `node:net` ones rather than `Deno.listen`/`Deno.connect`,
 * because a test needs a real TCP reset and Deno cannot send one:
 * `Deno.TcpConn.close()` always calls `shutdown(SHUT_WR)` before `close()`
 * (seen with strace), so the peer reads a clean EOF first, even when unread
 * data makes Linux send an RST after the FIN. `net.Socket.resetAndDestroy()`
 * sets `SO_LINGER {on, 0}` and closes, which sends a lone RST: the peer's
 * pending and next reads fail with ECONNRESET (`Deno.errors.ConnectionReset`
 * in Deno, `ECONNRESET` in ssh2).
 *
 * Randomness (the cut points) comes from a seeded PRNG; the seed is logged at
 * start and can be forced with the `seed` option or `FAULT_PROXY_SEED`.
 *
 * @module
 */
import net from "node:net";
import type { Buffer } from "node:buffer";
import { logger } from "../src/log/logger.ts";

const log = logger("fault proxy");

/** How a connection is cut: `rst` resets it, `fin` closes it cleanly (EOF). */
export type CutMode = "rst" | "fin";

/** Where {@linkcode FaultProxy.cutAfter} cuts connections. */
export interface CutRange {
  /** Fewest bytes forwarded (both directions together) before the cut. */
  minBytes: number;
  /** Most bytes forwarded (both directions together) before the cut. */
  maxBytes: number;
  /** How to cut. */
  mode: CutMode;
}

/** Options of {@linkcode FaultProxy.start}. */
export interface FaultProxyOptions {
  /** The real server every connection is forwarded to. */
  target: { hostname: string; port: number };
  /** PRNG seed; default: `FAULT_PROXY_SEED` if set, else random. Logged at start. */
  seed?: number;
}

type Direction = "up" | "down";

/** Bytes one direction buffers before it stops reading from its source. */
const HIGH_WATER = 4 * 1024 * 1024;
/** How long a connection cut with FIN drains its peers before it is dropped. */
const FIN_GRACE_MS = 1000;

/** The mulberry32 PRNG: a function returning numbers in [0, 1) from a 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The fault settings shared by the proxy and its connections. */
interface Faults {
  stalled: boolean;
  latencyMs: number;
  rate: number | undefined;
  /** Throttle's virtual clock per direction: when the link is free again. */
  nextFree: Record<Direction, number>;
  bytes: Record<Direction, number>;
}

/** Resets a socket (RST) when it is connected, else just destroys it. */
function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  if (socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

/** One direction of a connection: chunks read from `source`, waiting for `dest`. */
class Flow {
  readonly chunks: { data: Buffer; at: number }[] = [];
  offset = 0;
  queued = 0;
  ended = false;
  constructor(readonly dir: Direction, readonly source: net.Socket, readonly dest: net.Socket) {}
}

/** One proxied connection: the client's socket and ours to the target. */
class Link {
  readonly server: net.Socket;
  readonly closed: Promise<void>;
  state: "connecting" | "open" | "cut" = "connecting";
  /** Stalled alone (see {@linkcode FaultProxy.stallConnection}). */
  stalled = false;
  /** Its own throttle (see {@linkcode FaultProxy.throttleConnection}), before the link's. */
  rate: number | undefined;
  nextFree: Record<Direction, number> = { up: 0, down: 0 };
  forwarded = 0;
  cutAt: number | undefined;
  cutMode: CutMode = "rst";
  #wakers = new Set<() => void>();
  #grace: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly id: number,
    readonly client: net.Socket,
    target: FaultProxyOptions["target"],
    readonly faults: Faults,
  ) {
    client.setNoDelay(true);
    this.server = net.connect({
      host: target.hostname,
      port: target.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    this.closed = Promise.all([closed(client), closed(this.server)]).then(() => {
      clearTimeout(this.#grace);
      this.wake();
    });
    client.on("error", (error) => this.#fail("client", error));
    this.server.on("error", (error) => this.#fail("target", error));
    this.server.once("connect", () => this.#start());
  }

  /** Wakes the pumps so they look at the fault settings again. */
  wake(): void {
    for (const waker of [...this.#wakers]) waker();
  }

  /** Cuts the connection now, unless it is already cut. */
  cut(mode: CutMode, why: string): void {
    if (this.state === "cut") return;
    const wasConnecting = this.state === "connecting";
    this.state = "cut";
    log.debug(`connection ${this.id}: cut with ${mode} (${why}) after ${this.forwarded} bytes`);
    this.wake();
    if (mode === "rst") {
      reset(this.client);
      reset(this.server);
      return;
    }
    // FIN: half-close both sides, then read and drop what still comes, so that
    // no unread data turns the final close() into an RST. Each socket closes
    // itself once its peer has closed too; the grace timer drops stragglers.
    if (wasConnecting) this.server.destroy();
    for (const socket of [this.client, this.server]) {
      if (socket.destroyed) continue;
      socket.on("data", () => {});
      socket.resume();
      socket.end();
    }
    this.#grace = setTimeout(() => this.destroy(), FIN_GRACE_MS);
  }

  /** Closes both sockets at once (no reset), for the proxy's `close()`. */
  destroy(): void {
    this.state = "cut";
    this.client.destroy();
    this.server.destroy();
    this.wake();
  }

  #fail(side: string, error: Error): void {
    if (this.state === "cut") return;
    log.debug(`connection ${this.id}: ${side} failed, resetting the other side: ${error.message}`);
    this.cut("rst", `${side} failed`);
  }

  #start(): void {
    if (this.state !== "connecting") return;
    this.state = "open";
    const up = new Flow("up", this.client, this.server);
    const down = new Flow("down", this.server, this.client);
    for (const flow of [up, down]) {
      flow.source.on("data", (data: Buffer) => {
        if (this.state !== "open") return;
        flow.chunks.push({ data, at: performance.now() });
        flow.queued += data.length;
        if (flow.queued >= HIGH_WATER) flow.source.pause();
        this.wake();
      });
      flow.source.on("end", () => {
        flow.ended = true;
        this.wake();
      });
    }
    if (this.cutAt !== undefined && this.cutAt <= 0) {
      this.cut(this.cutMode, "byte budget 0");
      return;
    }
    for (const flow of [up, down]) {
      this.#pump(flow).catch((error) => this.#fail(flow.dir === "up" ? "target" : "client", error));
    }
  }

  /** Resolves on the next wake-up, or after `ms` if given. */
  #idle(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      if (ms !== undefined) timer = setTimeout(done, ms);
      this.#wakers.add(done);
    });
  }

  /** Forwards one direction, applying stall, latency, throttle and cut. */
  async #pump(flow: Flow): Promise<void> {
    const faults = this.faults;
    let paid = 0; // bytes of the head chunk already paid for under the throttle
    while (this.state === "open") {
      if (faults.stalled || this.stalled) {
        await this.#idle();
        continue;
      }
      const head = flow.chunks[0];
      if (head === undefined) {
        if (flow.ended) {
          flow.dest.end();
          return;
        }
        await this.#idle();
        continue;
      }
      const early = head.at + faults.latencyMs - performance.now();
      if (early > 0) {
        await this.#idle(early);
        continue;
      }
      let size = head.data.length - flow.offset;
      const rate = this.rate ?? faults.rate;
      if (rate !== undefined) {
        const nextFree = this.rate !== undefined ? this.nextFree : faults.nextFree;
        size = Math.min(size, Math.max(1, Math.min(65536, Math.floor(rate / 20))));
        if (paid < size) {
          const now = performance.now();
          const start = Math.max(now, nextFree[flow.dir]);
          nextFree[flow.dir] = start + (size - paid) * 1000 / rate;
          paid = size;
          await this.#idle(nextFree[flow.dir] - now);
          continue;
        }
      }
      if (this.cutAt !== undefined) size = Math.min(size, this.cutAt - this.forwarded);
      const piece = head.data.subarray(flow.offset, flow.offset + size);
      flow.offset += size;
      flow.queued -= size;
      paid = Math.max(0, paid - size);
      if (flow.offset === head.data.length) {
        flow.chunks.shift();
        flow.offset = 0;
      }
      this.forwarded += size;
      faults.bytes[flow.dir] += size;
      await new Promise<void>((resolve, reject) =>
        flow.dest.write(piece, (error) => error ? reject(error) : resolve())
      );
      if (this.state !== "open") return;
      if (this.cutAt !== undefined && this.forwarded >= this.cutAt) {
        this.cut(this.cutMode, `byte budget ${this.cutAt} reached`);
        return;
      }
      if (flow.source.isPaused() && flow.queued < HIGH_WATER / 2) flow.source.resume();
    }
  }
}

/**
 * A TCP proxy on 127.0.0.1 that injects faults between a client and a real
 * server. Every fault can be switched at run time; `clear()` removes all.
 */
export class FaultProxy {
  /** The port the proxy listens on (127.0.0.1). */
  readonly port: number;
  /** The PRNG seed of this run; pass it back as `seed` to reproduce the cuts. */
  readonly seed: number;
  /**
   * Bytes forwarded so far over all connections, client to server (`up`) and
   * server to client (`down`); counted when handed to the receiving socket.
   */
  readonly bytes: { up: number; down: number };

  #server: net.Server;
  #target: FaultProxyOptions["target"];
  #random: () => number;
  #faults: Faults;
  #links = new Set<Link>();
  #refused = new Set<Promise<void>>();
  #accepted = 0;
  #cut: CutRange | undefined;
  #refusing = false;
  #closing: Promise<void> | undefined;

  private constructor(server: net.Server, options: FaultProxyOptions, seed: number) {
    this.#server = server;
    this.#target = options.target;
    this.port = (server.address() as net.AddressInfo).port;
    this.seed = seed;
    this.#random = mulberry32(seed);
    this.bytes = { up: 0, down: 0 };
    this.#faults = {
      stalled: false,
      latencyMs: 0,
      rate: undefined,
      nextFree: { up: 0, down: 0 },
      bytes: this.bytes,
    };
    server.on("connection", (socket: net.Socket) => this.#accept(socket));
  }

  /** Starts a proxy on 127.0.0.1, on a free port, forwarding to `options.target`. */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const seed = (options.seed ?? envSeed() ?? crypto.getRandomValues(new Uint32Array(1))[0]) >>>
      0;
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once(
        "error",
        (error) =>
          reject(
            new Error(`Cannot start the fault proxy on 127.0.0.1: ${error.message}`, {
              cause: error,
            }),
          ),
      );
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const proxy = new FaultProxy(server, options, seed);
    const { hostname, port } = options.target;
    log.info(`127.0.0.1:${proxy.port} -> ${hostname}:${port}, seed ${seed}`);
    return proxy;
  }

  /** How many connections were accepted so far, refused ones included. */
  connections(): number {
    return this.#accepted;
  }

  /** How many connections are open now (not yet fully closed). */
  openConnections(): number {
    return this.#links.size + this.#refused.size;
  }

  /**
   * Cuts every connection after a random number of bytes in
   * [minBytes, maxBytes], counting both directions together; each connection
   * draws its own number (seeded), the open ones counting from now. The cut
   * falls exactly on that byte: a chunk that crosses it is split. With `fin`
   * every forwarded byte arrives before the EOF; with `rst` bytes still in
   * flight may be lost, as with a real reset.
   */
  cutAfter(range: CutRange): void {
    const { minBytes, maxBytes } = range;
    if (!(Number.isSafeInteger(minBytes) && minBytes >= 0 && Number.isSafeInteger(maxBytes))) {
      throw new RangeError(
        `Cannot cut after "${minBytes}".."${maxBytes}" bytes: bounds must be integers >= 0`,
      );
    }
    if (maxBytes < minBytes) {
      throw new RangeError(`Cannot cut after "${minBytes}".."${maxBytes}" bytes: max < min`);
    }
    this.#cut = { ...range };
    for (const link of this.#links) this.#arm(link);
  }

  /** Stops forwarding in both directions without closing anything (a half-dead link). */
  stall(): void {
    this.#faults.stalled = true;
  }

  /** Forwards again after `stall()`; nothing buffered meanwhile is lost. */
  resume(): void {
    this.#faults.stalled = false;
    this.#wakeAll();
  }

  /**
   * Stalls (`true`) or resumes (`false`) only connection `id` (the first
   * accepted is 1): one stream that stopped while the others carry on.
   */
  stallConnection(id: number, stalled: boolean): void {
    const link = [...this.#links].find((link) => link.id === id);
    if (!link) throw new RangeError(`Cannot stall connection ${id}: it is not open`);
    link.stalled = stalled;
    link.wake();
  }

  /** Cuts only connection `id` now: one stream breaks while the others carry on. */
  cutConnection(id: number, mode: CutMode): void {
    const link = [...this.#links].find((link) => link.id === id);
    if (!link) throw new RangeError(`Cannot cut connection ${id}: it is not open`);
    link.cut(mode, `cut connection ${id}`);
  }

  /**
   * Caps each direction of connection `id` alone at `bytesPerSecond` (a slow
   * stream beside fast ones); `undefined` removes its cap.
   */
  throttleConnection(id: number, bytesPerSecond: number | undefined): void {
    const link = [...this.#links].find((link) => link.id === id);
    if (!link) throw new RangeError(`Cannot throttle connection ${id}: it is not open`);
    if (bytesPerSecond !== undefined && !(bytesPerSecond > 0 && Number.isFinite(bytesPerSecond))) {
      throw new RangeError(`Cannot throttle to "${bytesPerSecond}" bytes/s: must be > 0`);
    }
    link.rate = bytesPerSecond;
    link.nextFree = { up: 0, down: 0 };
    link.wake();
  }

  /**
   * Caps the throughput of each direction at `bytesPerSecond`, shared by all
   * connections (one link); `undefined` removes the cap.
   */
  throttle(bytesPerSecond: number | undefined): void {
    if (bytesPerSecond !== undefined && !(bytesPerSecond > 0 && Number.isFinite(bytesPerSecond))) {
      throw new RangeError(`Cannot throttle to "${bytesPerSecond}" bytes/s: must be > 0`);
    }
    this.#faults.rate = bytesPerSecond;
    this.#faults.nextFree = { up: 0, down: 0 };
    this.#wakeAll();
  }

  /**
   * Delays every chunk by `ms` in each direction (one way: a 100 ms round
   * trip is `latency(50)`); `undefined` or 0 removes the delay.
   */
  latency(ms: number | undefined): void {
    if (ms !== undefined && !(ms >= 0 && Number.isFinite(ms))) {
      throw new RangeError(`Cannot add a latency of "${ms}" ms: must be >= 0`);
    }
    this.#faults.latencyMs = ms ?? 0;
    this.#wakeAll();
  }

  /**
   * While on, new connections are accepted and reset at once (a vessel that is
   * down; the target is not contacted); switching on also resets the open ones.
   */
  refuse(on: boolean): void {
    this.#refusing = on;
    if (on) this.cutAll("rst");
  }

  /** Cuts every open connection now: `rst` resets, `fin` closes cleanly (EOF). */
  cutAll(mode: CutMode): void {
    for (const link of this.#links) link.cut(mode, "cut all");
  }

  /** Removes every fault: no cuts, stall, throttle, latency or refusal. */
  clear(): void {
    this.#cut = undefined;
    for (const link of this.#links) link.cutAt = undefined;
    this.#refusing = false;
    this.#faults.stalled = false;
    this.#faults.latencyMs = 0;
    this.#faults.rate = undefined;
    this.#wakeAll();
  }

  /** Stops listening and closes every connection; resolves when all are closed. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const stopped = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const link of this.#links) link.destroy();
      await Promise.all([
        stopped,
        ...[...this.#links].map((link) => link.closed),
        ...this.#refused,
      ]);
      log.debug(`127.0.0.1:${this.port}: closed after ${this.#accepted} connections`);
    })();
    return this.#closing;
  }

  #accept(client: net.Socket): void {
    const id = ++this.#accepted;
    if (this.#refusing || this.#closing) {
      client.on("error", () => {});
      const done = closed(client).then(() => {
        this.#refused.delete(done);
      });
      this.#refused.add(done);
      if (this.#closing) client.destroy();
      else reset(client);
      return;
    }
    const link = new Link(id, client, this.#target, this.#faults);
    this.#links.add(link);
    link.closed.then(() => this.#links.delete(link));
    if (this.#cut) this.#arm(link);
  }

  /** Draws the byte budget of `link` under the current cut range. */
  #arm(link: Link): void {
    const cut = this.#cut;
    if (cut === undefined || link.state === "cut") return;
    const budget = cut.minBytes + Math.floor(this.#random() * (cut.maxBytes - cut.minBytes + 1));
    link.cutAt = link.forwarded + budget;
    link.cutMode = cut.mode;
    log.debug(`connection ${link.id}: will be cut with ${cut.mode} after ${budget} more bytes`);
    if (budget === 0 && link.state === "open") link.cut(cut.mode, "byte budget 0");
  }

  #wakeAll(): void {
    for (const link of this.#links) link.wake();
  }
}

function envSeed(): number | undefined {
  let text: string | undefined;
  try {
    text = Deno.env.get("FAULT_PROXY_SEED");
  } catch {
    return undefined; // no env permission
  }
  if (text === undefined || text === "") return undefined;
  const seed = Number(text);
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`Cannot use FAULT_PROXY_SEED "${text}": not an integer`);
  }
  return seed;
}
