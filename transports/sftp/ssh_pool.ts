/**
 * A vessel's SSH connections: which one a call runs on, when more log in
 * (OpenSSH or the builtin client), how many the vessel lets in, and which
 * streams have stalled. The SFTP transport says what to do on a connection;
 * this says where.
 *
 * @module
 */
import { errorMessage } from "../../lib/error_message.ts";
import {
  type ConnectionPool,
  type ProbeItem,
  TransportError,
  type TransportErrorCode,
  type TransportLogger,
} from "../transport.ts";
import type { SftpVessel, SshClientKind } from "./options.ts";
import { openOpenSsh } from "./openssh_link.ts";
import { chooseCarrier, type OpenSshSetup, prepareOpenSsh } from "./openssh_setup.ts";
import type { AuthEnvironment, Credentials } from "./auth.ts";
import { hasStatus, type RunCommand, SFTP_STATUS, SshConnection } from "./connection.ts";
import { AnswerRate, placePart } from "./part_placement.ts";
import { slowStartAdvice } from "./slow_start.ts";

/**
 * The most connections `Connections = auto` opens: enough for a link with
 * 1 % loss (one CUBIC stream carries ~2 Mbit/s at 60 ms) to carry tens of
 * Mbit/s; sshd's MaxStartups (10 unauthenticated at once by default) is
 * not met, since at most {@linkcode MAX_OPENING} are logging in and not yet
 * authenticated at once.
 */
export const AUTO_CONNECTIONS = 16;
/** Logins that may be under way and not authenticated yet, at the same time. */
const MAX_OPENING = 8;
/**
 * What waiting for a login costs, counted in calls queued in front on an
 * open connection: on a long link a login takes a dozen round trips, a
 * queued part a few.
 */
const LOGIN_COST = 2;
/**
 * A connection that comes up takes calls waiting for slower logins while it
 * carries fewer calls than this: a part should not wait seconds for its own
 * login, but a batch of small files spread over logins that finish together
 * should not all crowd onto the first.
 */
const TAKE_OVER_BELOW = 4;
/** A connection that is up has room for a call waiting for a login while it carries fewer. */
const ROOM_BELOW = 2;
/**
 * Round trips from starting `ssh` to its authentication: TCP's handshake,
 * the banners, the key exchange, the service request and three of
 * authentication (none, the key offered, the signature) make about 6.5;
 * process start and key exchange CPU the rest.
 */
const ROUND_TRIPS_TO_AUTHENTICATE = 8;
/**
 * A first login this slow to authenticate (1.6 s and more) tells a long link
 * before the first SFTP reply does (the session, the SFTP subsystem and a
 * request come between), so the other connections start logging in that
 * much earlier: on a 600 ms link, about 3 s sooner. Faster logins say too
 * little (a slow CPU looks the same) and wait for the reply.
 */
const LONG_LOGIN_ROUND_TRIP_MS = 200;
/** Connections `check` opens at once to see whether the vessel lets them in. */
const PROBED_CONNECTIONS = 6;
/** Connections in use until the engine says how many (tests, `check`). */
const IN_USE_UNTOLD = 2;
/**
 * A connection whose parts under way have had no write answered for this
 * many round trips (and {@linkcode STALLED_MS}) takes no further part while
 * another connection can: its stream has stopped (a half-dead path, or TCP
 * backing off its retransmission timer after repeated losses) or crawls,
 * and a part queued behind it would end last. Below that, a new stream's
 * slow start (on sat, 600 ms: a first 255 KiB write answered after 6 round
 * trips) must not count: at 4 round trips and 1 s, parts crowded onto the
 * connections just logged in, and 8 MiB took 30.1-32.0 s against 24.8-27.7.
 */
const STALLED_ROUND_TRIPS = 8;
const STALLED_MS = 3_000;
/** What a stalled connection weighs for a part: more than any login. */
const STALLED_COST = 1_000;
/** How long a vessel that refused a further connection is not asked for one again. */
const REFUSED_MS = 60_000;
/**
 * How long a failed login answers the calls that come right behind it, when
 * no other connection is up or logging in: each part of a file queued for a
 * vessel that refuses connections logged in again the moment the part before
 * failed (28 logins in 0.2 s; sshd's MaxStartups and fail2ban count each).
 * Below the engine's shortest back-off (0.8 s), so its next try logs in.
 */
const LOGIN_FAILURE_HOLD_MS = 500;

/**
 * A call on a connection; `answered` hears the bytes the vessel answers of
 * its writes (or holds from a cut try: `resumed`).
 */
export type RunBody<T> = (
  connection: SshConnection,
  answered: (bytes: number, resumed?: boolean) => void,
) => Promise<T>;

/** Where {@linkcode SshPool.run} runs a call. */
export interface RunOptions {
  readonly spread?: boolean;
  readonly part?: {
    readonly bytes: number;
    readonly bytesAfter: number;
    /** Which part: its connection is known while it runs (see {@linkcode SshPool.stalledPart}). */
    readonly id?: string;
  };
  readonly on?: SshConnection;
}

/** One connection of the pool, open, logging in or not yet wanted. */
interface Slot {
  connection?: SshConnection;
  opening?: Promise<SshConnection>;
  /** The login under way has authenticated (sshd no longer counts it against MaxStartups). */
  authenticated?: boolean;
  /**
   * The connection of the login under way, once it takes requests: they
   * leave with its SFTP session's start (see OpenSshOptions.onEarlyConnection).
   */
  early?: Promise<SshConnection>;
  /** Calls waiting for the login, or running on the connection. */
  calls: number;
  /** Parts under way on it. */
  parts: number;
  /** When one of its parts last had a write answered, or started (`performance.now()`). */
  answeredAt: number;
  /** Bytes of the parts on it (or waiting for its login) the vessel has not answered. */
  pendingBytes: number;
  /** The rate its parts are answered at on its connection. */
  rate: AnswerRate;
}

/** What {@linkcode SshPool} needs besides the vessel. */
export interface SshPoolOptions {
  /** SSH connections, fixed; overrides the vessel's `Connections`. */
  readonly connections?: number;
  /** Where default keys and the agent are found (default: this process's env). */
  readonly authEnvironment?: AuthEnvironment;
  readonly log: TransportLogger;
  /** Hears that a connection logged in, or that the count in use changed. */
  readonly changed: () => void;
  /** Gets a way to run commands as soon as an OpenSSH login can, before its SFTP session. */
  readonly commandsReady: (run: RunCommand) => void;
}

/** A vessel's SSH connections, as many as the engine uses (see {@linkcode ConnectionPool}). */
export class SshPool implements ConnectionPool {
  readonly max: number;
  readonly adaptive: boolean;
  /** The SSH carrier: the system's OpenSSH client, or ssh2 in this process. */
  readonly carrier: SshClientKind;
  readonly #config: SftpVessel;
  readonly #log: TransportLogger;
  readonly #options: SshPoolOptions;
  readonly #slots: Slot[];
  /** Slots in use: the engine's choice, at most the vessel's ceiling. */
  #inUse: number;
  /** Fewer than the slots when the vessel refused a further connection lately. */
  #ceiling: number;
  #ceilingUntil = 0;
  readonly #acknowledged = { bytes: 0 };
  /** When any connection's link last progressed (see connection.ts). */
  readonly #linkProgress = { at: 0 };
  #credentials?: Promise<Credentials>;
  readonly #sshCommand?: string;
  #openSsh?: Promise<OpenSshSetup>;
  #connectionsOpened = 0;
  /**
   * The round trip a long first login showed (see
   * {@linkcode LONG_LOGIN_ROUND_TRIP_MS}), until an SFTP reply tells it.
   */
  #loginRoundTripMs?: number;
  /**
   * Calls, once SFTP replies tell the round trip, before the link is judged
   * long or not (see slow_start.ts): the quickest of several replies, since
   * the first ones can wait behind a busy shore's logins.
   */
  #linkJudgedIn = 3;
  #closed = false;
  /** Ends the logins still under way when the pool closes: nothing waits for them. */
  readonly #closing = new AbortController();
  /**
   * The vessel has accepted a login (ssh said so, or a connection opened):
   * more may log in together without risking a ban.
   */
  #admitted = false;
  /** ssh's TCP handshake took a long round trip: logins start ahead before one is accepted. */
  #longLink = false;
  /** Settles with the slot of the next login that succeeds (then replaced by a new one). */
  #loggedIn = Promise.withResolvers<Slot>();
  /** Resolved (and replaced) when a call ends on a connection that is up, with its slot. */
  #callEnded = Promise.withResolvers<Slot>();
  /**
   * Made by parts waiting while every connection has stalled, and resolved
   * when one may take them again (a call ended, or a stalled one was answered).
   */
  #partsWaiting?: PromiseWithResolvers<void>;
  /** The slot each part with an id runs on. */
  readonly #partsOn = new Map<string, Slot>();
  /**
   * How the login {@linkcode connectAhead} started failed, for the next call
   * to report instead of logging in again: a refused key is then tried once,
   * not once ahead and once more by the call (fail2ban counts both).
   */
  #failedAhead?: unknown;
  /** Resolved when an `ssh` of this pool first runs. */
  readonly #sshStarted = Promise.withResolvers<void>();
  /** The last login that failed while no other was up or under way (LOGIN_FAILURE_HOLD_MS). */
  #loginFailure?: { readonly error: unknown; readonly at: number };

  /** Connects lazily: nothing happens until the first call. */
  constructor(vessel: SftpVessel, options: SshPoolOptions) {
    const fixed = options.connections ??
      (vessel.connections === "auto" ? undefined : vessel.connections);
    this.max = Math.max(1, Math.floor(fixed ?? AUTO_CONNECTIONS));
    this.adaptive = fixed === undefined;
    this.#config = vessel;
    this.#log = options.log;
    this.#options = options;
    this.#slots = Array.from({ length: this.max }, () => ({
      calls: 0,
      parts: 0,
      answeredAt: 0,
      pendingBytes: 0,
      rate: new AnswerRate(),
    }));
    this.#inUse = this.adaptive ? Math.min(IN_USE_UNTOLD, this.max) : this.max;
    this.#ceiling = this.max;
    const { carrier, ssh } = chooseCarrier(vessel);
    this.carrier = carrier;
    this.#sshCommand = ssh;
    this.#log.info(`SSH client: ${this.describeCarrier()}`);
    if (this.carrier === "openssh" && this.#sshCommand) {
      // While the daemon starts: the first login then need not wait for `ssh -G`. A
      // failure here is only forgotten; the first login tries again and reports it.
      this.#openSshSetup(this.#sshCommand).catch(() => {});
    }
  }

  get open(): number {
    return this.#slots.filter((slot) => live(slot)).length;
  }

  get acknowledgedBytes(): number {
    return this.#acknowledged.bytes;
  }

  // Asked several times per small file: a loop, not arrays made to find a minimum.
  get roundTripMs(): number | undefined {
    let quickest = Infinity;
    for (const slot of this.#slots) {
      quickest = Math.min(quickest, live(slot)?.roundTripMs ?? Infinity);
    }
    return Number.isFinite(quickest) ? quickest : this.#loginRoundTripMs;
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether `ssh` was found, where the OpenSSH carrier needs it. */
  get hasClient(): boolean {
    return this.carrier === "builtin" || this.#sshCommand !== undefined;
  }

  /** Connections in use that are up. */
  upCount(): number {
    return this.#usableUp().length;
  }

  /** Whether a connection in use other than `connection` is up. */
  upBesides(connection: SshConnection | undefined): boolean {
    return this.#usableUp().some((slot) => live(slot) !== connection);
  }

  /**
   * Whether the part `id` (see {@linkcode RunOptions}) runs on a connection
   * whose parts have had no answer for long (see {@linkcode STALLED_ROUND_TRIPS}).
   */
  stalledPart(id: string): boolean {
    const slot = this.#partsOn.get(id);
    return slot !== undefined && stalled(slot, performance.now());
  }

  /** A connection for `check`: the first up, or a new login. */
  async anyConnection(): Promise<SshConnection> {
    // The login's outcome, not a connection handed out before its session started.
    const { connection, login } = await this.#connection(this.#pick());
    return await (login ?? connection);
  }

  /** Which SSH client carries this vessel's connections, for logs and `check`. */
  describeCarrier(): string {
    if (this.carrier === "builtin") return "builtin (ssh2 in this process)";
    if (!this.#sshCommand) {
      return `openssh, but no ssh binary ${this.#sshSearched()}`;
    }
    const config = this.#config.sshConfigFile === undefined
      ? "ssh_config: the user's"
      : `ssh_config: ${this.#config.sshConfigFile}`;
    return `openssh (${this.#sshCommand}; ${config})`;
  }

  /**
   * Starts the first `connections` logins (as many as the pool may use)
   * before any call needs them (see {@linkcode Transport.connectAhead}).
   */
  connectAhead(connections = 1): Promise<void> {
    if (this.#closed || this.#slots.some((slot) => live(slot) || slot.opening)) {
      return Promise.resolve();
    }
    const opening = this.#startOpening(this.#slots[0]).then(
      () => {},
      (error) => {
        this.#failedAhead = error;
      },
    );
    if (this.adaptive) this.#inUse = Math.max(this.#inUse, Math.min(this.max, connections));
    for (const slot of this.#usable().slice(1, connections)) {
      this.#startOpening(slot).catch((error) => this.#refusedAhead(error));
    }
    // ssh2's login runs in this process, on modules it loads first: nothing to wait for.
    if (this.carrier !== "openssh") return Promise.resolve();
    return Promise.race([this.#sshStarted.promise, opening]);
  }

  /** The connection that is up, carries no call and has shown the highest rate, if any. */
  fastestIdle(): SshConnection | undefined {
    if (this.#closed) return undefined;
    const now = performance.now();
    let fastest: SshConnection | undefined;
    let fastestRate = -1;
    for (const slot of this.#usableUp()) {
      if (slot.calls > 0) continue; // A part's pending bytes are counted with its call.
      const rate = slot.rate.bytesPerMs(now) ?? 0;
      if (rate > fastestRate) {
        fastest = live(slot);
        fastestRate = rate;
      }
    }
    return fastest;
  }

  /**
   * Opens the connections a transfer would start with, all at once, and
   * tells whether the vessel let them in (sshd's MaxStartups drops logins
   * beyond 10 at once by default, fewer where the operator set it so).
   */
  async probeConnections(): Promise<ProbeItem> {
    const { adaptive, max } = this;
    const wanted = adaptive ? Math.min(max, PROBED_CONNECTIONS) : max;
    const inUse = this.#inUse;
    this.use(wanted);
    while (this.#slots.some((slot) => slot.opening)) {
      await Promise.allSettled(this.#slots.map((slot) => slot.opening));
    }
    const open = this.open;
    this.use(inUse);
    const mode = adaptive
      ? `auto: follows the link, up to ${max}`
      : `${max} (Connections = ${max})`;
    if (open >= wanted) {
      return { check: "connections", ok: true, detail: `${mode}; ${open} logged in at once` };
    }
    return {
      check: "connections",
      ok: adaptive,
      detail: `${mode}; the vessel let in ${open} of ${wanted} at once (sshd_config's ` +
        `MaxStartups, or a firewall): ContentMonster stays at ${open} for a while after a ` +
        `refusal` + (adaptive ? "" : "; lower Connections or raise MaxStartups"),
    };
  }

  /**
   * Runs `body` on a connection, turning every failure into a TransportError
   * for `action`. Only a call with `spread` (a part's worth of
   * data) may wait for a connection still logging in while another is up:
   * that is how parts spread over the connections the engine adds, and a
   * login costs a dozen round trips, more than any small call queued on a
   * connection that is up. A `part` (of `bytes`, with `bytesAfter` of its
   * file still to come) is kept off a slow connection at the end of its file
   * (see {@linkcode placePart}), and waits while every connection it could
   * use has stalled (see {@linkcode STALLED_ROUND_TRIPS}); `body` tells the
   * bytes the vessel answers of its writes (or holds from a cut try:
   * `resumed`) through its second argument. A call `on` a connection runs
   * there while no part's writes are under way on it.
   */
  async run<T>(action: string, body: RunBody<T>, options: RunOptions = {}): Promise<T> {
    let slot: Slot | undefined;
    let part = false;
    let pending = 0;
    try {
      let used: { slot: Slot; connection: SshConnection; login?: Promise<SshConnection> };
      for (;;) {
        const pinned = this.#unloadedSlotOf(options.on);
        slot = pinned ?? this.#pick(options.spread);
        if (options.part) {
          if (!pinned) slot = this.#placePart(slot, options.part.bytes, options.part.bytesAfter);
          pending = options.part.bytes;
        }
        slot.calls++;
        slot.pendingBytes += pending;
        used = await this.#connection(slot, pending);
        slot = used.slot;
        if (!options.part || !stalled(slot, performance.now())) break;
        slot.calls--;
        slot.pendingBytes -= pending;
        slot = undefined;
        await (this.#partsWaiting ??= Promise.withResolvers()).promise;
      }
      const on = slot;
      const connection = used.connection;
      if (this.#linkJudgedIn > 0 && connection.roundTripMs !== undefined) {
        if (--this.#linkJudgedIn === 0) this.#adviseOnLongLink(this.roundTripMs!);
      }
      if (options.part) {
        part = true;
        if (options.part.id) this.#partsOn.set(options.part.id, on);
        if (on.parts++ === 0) {
          on.answeredAt = performance.now();
          on.rate.busy(on.answeredAt);
        }
      }
      const answered: Parameters<RunBody<T>>[1] = (bytes, resumed = false) => {
        const now = performance.now();
        const wasStalled = stalled(on, now);
        on.answeredAt = now;
        const answered = Math.min(bytes, pending);
        pending -= answered;
        on.pendingBytes -= answered;
        // Bytes a cut try left on the vessel crossed the link then, not now.
        if (!resumed) on.rate.answered(bytes);
        if (wasStalled) this.#wakeWaitingParts();
      };
      try {
        return await body(connection, answered);
      } catch (error) {
        if (!used.login || connection.sftpStarted) throw error;
        // Taken while its login ran, the connection's SFTP session never started: the login
        // says why, or carries commands only (a vessel without SFTP), as for a call that waited.
        const loggedIn = await used.login;
        if (loggedIn === connection) throw error;
        return await body(loggedIn, answered);
      }
    } catch (error) {
      throw classify(action, error);
    } finally {
      const id = options.part?.id;
      if (id && this.#partsOn.get(id) === slot) this.#partsOn.delete(id);
      if (slot) {
        if (part && --slot.parts === 0) slot.rate.idle(performance.now());
        slot.pendingBytes -= pending;
        slot.calls--;
        if (live(slot)) {
          const ended = this.#callEnded;
          this.#callEnded = Promise.withResolvers<Slot>();
          ended.resolve(slot);
        }
      }
      this.#wakeWaitingParts();
      this.#closeSurplus();
    }
  }

  /**
   * The slot whose open connection is `connection`, unless writes of parts
   * are under way there: a call would wait behind them.
   */
  #unloadedSlotOf(connection: SshConnection | undefined): Slot | undefined {
    const slot = connection && this.#slots.find((slot) => live(slot) === connection);
    return slot && slot.pendingBytes === 0 ? slot : undefined;
  }

  /** `picked` for a part, or a faster connection at the end of its file (see {@linkcode placePart}). */
  #placePart(picked: Slot, bytes: number, bytesAfter: number): Slot {
    const now = performance.now();
    const opening = this.#unauthenticated();
    const lanes = this.#usable().map((slot) => ({
      slot,
      pendingBytes: slot.pendingBytes,
      rate: slot.rate.bytesPerMs(now),
      state: live(slot)
        ? stalled(slot, now) ? "none" as const : "up" as const
        : slot.opening || opening < MAX_OPENING
        ? "login" as const
        : "none" as const,
    }));
    const pickedLane = lanes.find((lane) => lane.slot === picked);
    return pickedLane ? placePart(lanes, pickedLane, bytes, bytesAfter).slot : picked;
  }

  /** Has the parts waiting for a connection that has not stalled look again. */
  #wakeWaitingParts(): void {
    this.#partsWaiting?.resolve();
    this.#partsWaiting = undefined;
  }

  /** Uses at most `count` connections; idle ones beyond it close now, busy ones when done. */
  use(count: number): void {
    this.#inUse = Math.max(1, Math.min(this.#slots.length, Math.floor(count)));
    this.#closeSurplus();
    this.#openAhead();
    this.#options.changed();
  }

  /** The slots calls may use now. */
  #usable(): Slot[] {
    if (this.#ceilingUntil && Date.now() >= this.#ceilingUntil) {
      this.#ceiling = this.#slots.length;
      this.#ceilingUntil = 0;
    }
    return this.#slots.slice(0, Math.min(this.#inUse, this.#ceiling));
  }

  /** The usable slots whose connection is up. */
  #usableUp(): Slot[] {
    return this.#usable().filter((slot) => live(slot));
  }

  /** Closes idle connections in slots beyond those in use. */
  #closeSurplus(): void {
    for (const slot of this.#slots.slice(this.#usable().length)) {
      const connection = slot.connection;
      if (connection && slot.calls === 0) {
        slot.connection = undefined;
        void connection.close();
      }
    }
  }

  /**
   * The least busy slot. With `spread`, an empty one counts as idle, so parts
   * spread to new connections as the engine allows more, but at most
   * {@linkcode MAX_OPENING} log in at once; without, only a connection that
   * is up, if there is one.
   */
  #pick(spread = false): Slot {
    if (this.#closed) throw this.#closedError();
    const up = spread ? [] : this.#usableUp();
    const usable = up.length > 0 ? up : this.#usable();
    const opening = this.#unauthenticated();
    const now = performance.now();
    let best: Slot | undefined;
    let bestLoad = Infinity;
    for (const slot of usable) {
      const load = live(slot)
        ? slot.calls + (spread && stalled(slot, now) ? STALLED_COST : 0)
        : slot.opening
        ? slot.calls + LOGIN_COST
        : opening >= MAX_OPENING
        ? Infinity
        : LOGIN_COST;
      if (load < bestLoad) {
        best = slot;
        bestLoad = load;
      }
    }
    // Every usable slot waits for a login: share a live connection beyond them (just shrunk).
    return best ?? this.#slots.find((slot) => live(slot)) ?? usable[0];
  }

  /**
   * The slot's connection, opened if needed, or another slot's that comes up
   * first with few calls, or one that is up and has room again: on a long,
   * busy link logins take seconds and vary by many, and a part must not wait
   * for a slow one while another connection is ready (wan: parts waited 1.7 s
   * for the governor's trial logins while the open connections ran dry, and
   * then finished last, in slow start). Another slot's too if the vessel
   * refuses this one.
   */
  async #connection(
    slot: Slot,
    pendingBytes = 0,
  ): Promise<{ slot: Slot; connection: SshConnection; login?: Promise<SshConnection> }> {
    const connection = live(slot);
    if (connection) return { slot, connection };
    const failedAhead = this.#failedAhead;
    this.#failedAhead = undefined;
    if (failedAhead !== undefined) throw failedAhead;
    const failure = this.#loginFailure;
    if (
      failure && performance.now() - failure.at < LOGIN_FAILURE_HOLD_MS &&
      !this.#slots.some((other) => live(other) || other.opening)
    ) throw failure.error;
    slot.connection = undefined;
    const opening = this.#startOpening(slot);
    try {
      for (;;) {
        const first = await Promise.race([
          opening.then((connection) => ({ up: slot, below: Infinity, connection })),
          (slot.early ?? opening).then((connection) => ({ up: slot, below: Infinity, connection })),
          this.#loggedIn.promise.then((up) => ({ up, below: TAKE_OVER_BELOW, connection: null })),
          this.#callEnded.promise.then((up) => ({ up, below: ROOM_BELOW, connection: null })),
        ]);
        if (first.up === slot && first.connection) {
          const login = first.connection === live(slot) ? undefined : opening;
          return { slot, connection: first.connection, login };
        }
        const firstConnection = live(first.up);
        if (
          firstConnection && first.up.calls < first.below && this.#usable().includes(first.up)
        ) {
          opening.catch((error) => this.#refusedAhead(error));
          return moved(slot, first.up, firstConnection, pendingBytes);
        }
      }
    } catch (error) {
      if (error === this.#failedAhead) this.#failedAhead = undefined; // This call heard it.
      const others = this.#slots.filter((other) => other !== slot && live(other));
      const loggingIn = this.#slots.some((other) => other !== slot && other.opening);
      if ((others.length === 0 && !loggingIn) || this.#closed) {
        this.#loginFailure = { error, at: performance.now() };
        throw error;
      }
      // The vessel serves (or is letting in) other connections but refused one more (sshd's
      // MaxStartups, a firewall's limit): stay with those it lets in for a while.
      this.#refused(Math.max(1, others.length), error);
      const other = others.length > 0
        ? others.reduce((a, b) => a.calls <= b.calls ? a : b)
        : await this.#firstUp(slot);
      const otherConnection = other && live(other);
      if (!otherConnection) throw error;
      return moved(slot, other, otherConnection, pendingBytes);
    }
  }

  /** The first other slot whose login under way succeeds, or `undefined` if none does. */
  async #firstUp(except: Slot): Promise<Slot | undefined> {
    for (;;) {
      const openings = this.#slots
        .filter((other) => other !== except && other.opening)
        .map((other) => other.opening!.then(() => other, () => undefined));
      if (openings.length === 0) return undefined;
      const up = await Promise.race(openings);
      if (up) return up;
    }
  }

  /** Starts the slot's login unless it runs already; a success opens the rest in use. */
  #startOpening(slot: Slot): Promise<SshConnection> {
    if (slot.opening) return slot.opening;
    slot.authenticated = false;
    const early = Promise.withResolvers<SshConnection>();
    slot.early = early.promise;
    slot.opening = this.#open(slot, early.resolve).then(
      (connection) => {
        slot.opening = slot.early = undefined;
        if (this.#closed) {
          void connection.close();
          throw this.#closedError();
        }
        slot.connection = connection;
        slot.rate = new AnswerRate();
        this.#admitted = true;
        this.#loginFailure = undefined;
        this.#options.changed();
        const loggedIn = this.#loggedIn;
        this.#loggedIn = Promise.withResolvers<Slot>();
        loggedIn.resolve(slot);
        this.#openAhead();
        return connection;
      },
      (error) => {
        slot.opening = slot.early = undefined;
        throw error;
      },
    );
    return slot.opening;
  }

  /**
   * Logs in the connections in use that are not open yet, before calls need
   * them: on a long link a login takes seconds, and parts wait for it. Only
   * once the vessel has accepted one login, so a refused key is not offered
   * once per connection (which could get the shore banned), and its errors
   * surface on the calls; or once a TCP handshake showed a long link, where
   * waiting for that costs the logins 6 s (then a refused key is offered
   * {@linkcode MAX_OPENING} times at most).
   */
  #openAhead(): void {
    if (this.#closed || !(this.#admitted || this.#longLink)) return;
    let opening = this.#unauthenticated();
    for (const slot of this.#usable()) {
      if (opening >= MAX_OPENING) return;
      if (live(slot) || slot.opening) continue;
      opening++;
      this.#startOpening(slot).catch((error) => this.#refusedAhead(error));
    }
  }

  /** A login no call waits for failed: a refusal if others are open. */
  #refusedAhead(error: unknown): void {
    const open = this.open;
    if (open > 0 && !this.#closed) this.#refused(open, error);
  }

  #refused(open: number, error: unknown): void {
    if (this.#ceilingUntil === 0) {
      this.#log.warn(
        `vessel "${this.#config.name}" refused connection ${open + 1} while ${open} are open ` +
          `(${errorMessage(error)}); using at most ${open} for ${REFUSED_MS / 1000} s ` +
          "(raise MaxStartups/MaxSessions in its sshd_config, or set Connections)",
      );
    }
    this.#ceiling = Math.max(1, open);
    this.#ceilingUntil = Date.now() + REFUSED_MS;
  }

  /**
   * Logins under way that have not authenticated yet: sshd's MaxStartups
   * (10 by default) counts those, so {@linkcode MAX_OPENING} bounds them, not
   * logins already past authentication that only start their session (on a
   * 600 ms link, the last 2.9 s of a login's 8.7).
   */
  #unauthenticated(): number {
    return this.#slots.filter((slot) => slot.opening && !slot.authenticated).length;
  }

  async #open(slot: Slot, early: (connection: SshConnection) => void): Promise<SshConnection> {
    if (this.carrier === "openssh") return await this.#openOpenSsh(slot, early);
    // Loaded here, with ssh2's client: a daemon over OpenSSH never needs them.
    this.#credentials ??= import("./auth.ts").then(({ loadCredentials }) =>
      loadCredentials(this.#config, this.#options.authEnvironment)
    ).then(
      (credentials) => {
        for (const reason of credentials.skipped) {
          this.#log.warn(`skipping a default key: ${reason}`);
        }
        return credentials;
      },
    );
    try {
      const credentials = await this.#credentials;
      return await SshConnection.open({
        vessel: this.#config,
        credentials,
        knownKeyTypes: await (await import("./host_key.ts")).knownKeyTypesOf(this.#config),
        log: this.#log,
        acknowledged: this.#acknowledged,
        linkProgress: this.#linkProgress,
        signal: this.#closing.signal,
      });
    } catch (error) {
      // Keys, agent or passwords may be fixed before the next try.
      if (error instanceof TransportError && error.code === "auth") this.#credentials = undefined;
      throw error;
    }
  }

  /** Where the ssh binary was looked for, for messages. */
  #sshSearched(): string {
    return this.#config.sshCommand ? `at ${JSON.stringify(this.#config.sshCommand)}` : "on PATH";
  }

  /** The options and control directory of `ssh` (its `ssh -G` runs), found once. */
  #openSshSetup(command: string): Promise<OpenSshSetup> {
    this.#openSsh ??= prepareOpenSsh(this.#config, command, this.#options.authEnvironment).catch(
      (error) => {
        this.#openSsh = undefined;
        throw new TransportError(
          `Cannot connect to vessel "${this.#config.name}": ${errorMessage(error)}`,
          "unsupported",
          { cause: error },
        );
      },
    );
    return this.#openSsh;
  }

  async #openOpenSsh(
    slot: Slot,
    early: (connection: SshConnection) => void,
  ): Promise<SshConnection> {
    const command = this.#sshCommand;
    if (!command) {
      throw new TransportError(
        `Cannot connect to vessel "${this.#config.name}": SSHClient = openssh, but there is no ssh ` +
          `binary ${this.#sshSearched()} (install openssh-client, set SSHCommand, or set ` +
          `SSHClient = builtin)`,
        "unsupported",
      );
    }
    const setup = await this.#openSshSetup(command);
    const started = performance.now();
    return await openOpenSsh({
      vessel: this.#config,
      log: this.#log,
      setup,
      controlPath: `${setup.dir}/c${this.#connectionsOpened++}`,
      acknowledged: this.#acknowledged,
      linkProgress: this.#linkProgress,
      signal: this.#closing.signal,
      // The uid TempDir's check needs, asked beside the SFTP session's start: on wan (40 ms)
      // each takes about 4 round trips after the login (traced), so neither waits long.
      onCommandsReady: this.#options.commandsReady,
      onStarted: () => this.#sshStarted.resolve(),
      onConnected: (handshakeMs) => this.#connectedAfter(handshakeMs),
      onAuthenticated: () => {
        const roundTrip = (performance.now() - started) / ROUND_TRIPS_TO_AUTHENTICATE;
        if (roundTrip >= LONG_LOGIN_ROUND_TRIP_MS) this.#loginRoundTripMs ??= roundTrip;
        slot.authenticated = true;
        // The credentials work: the other connections need not wait for this one's session.
        this.#admitted = true;
        this.#openAhead();
      },
      onEarlyConnection: early,
    });
  }

  /**
   * Hears how long ssh's TCP handshake took: one round trip (not ssh's own
   * start, which a busy shore stretches). On a long link the other logins then
   * start at once, seconds before the vessel accepts the first (on `sat`,
   * 600 ms, a login takes 8.6 s, 5.8 s of it before authentication).
   */
  #connectedAfter(ms: number): void {
    if (ms < LONG_LOGIN_ROUND_TRIP_MS || this.#longLink) return;
    this.#longLink = true;
    this.#loginRoundTripMs ??= ms;
    this.#openAhead();
  }

  /** Logs, once, what would make files after a pause faster on a long link. */
  #adviseOnLongLink(roundTripMs: number): void {
    void slowStartAdvice(roundTripMs).then((advice) => {
      if (advice) this.#log.info(advice);
    });
  }

  /** What a call gets once the pool is closed: a lost connection, as the engine expects. */
  #closedError(): TransportError {
    return new TransportError(
      `The transport of vessel "${this.#config.name}" is closed`,
      "connection",
    );
  }

  /** Closes every connection, and those still logging in once they are up. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    this.#wakeWaitingParts();
    const closing = this.#slots.map(async (slot) => {
      const connection = slot.connection ?? await slot.opening?.catch(() => undefined);
      slot.connection = undefined;
      await connection?.close();
    });
    await Promise.all(closing);
    const openSsh = await this.#openSsh?.catch(() => undefined);
    await openSsh?.dispose();
  }
}

/**
 * A call counted on `from` (with `pendingBytes` of a part) runs on `to`'s
 * connection: counted there at once, so calls deciding in the same turn see it.
 */
function moved(
  from: Slot,
  to: Slot,
  connection: SshConnection,
  pendingBytes: number,
): { slot: Slot; connection: SshConnection } {
  from.calls--;
  to.calls++;
  from.pendingBytes -= pendingBytes;
  to.pendingBytes += pendingBytes;
  return { slot: to, connection };
}

/** Whether the slot's parts under way have had no answer for long (see {@linkcode STALLED_ROUND_TRIPS}). */
function stalled(slot: Slot, now: number): boolean {
  if (slot.parts === 0) return false;
  const roundTrip = live(slot)?.roundTripMs ?? 0;
  return now - slot.answeredAt > Math.max(STALLED_MS, STALLED_ROUND_TRIPS * roundTrip);
}

/** The slot's connection while it is open. */
function live(slot: Slot): SshConnection | undefined {
  return slot.connection && !slot.connection.closed ? slot.connection : undefined;
}

/** Turns any failure into a TransportError whose message starts with `action`. */
function classify(action: string, error: unknown): TransportError {
  if (error instanceof TransportError) {
    return new TransportError(`${action}: ${error.message}`, error.code, {
      cause: error,
      retryable: error.retryable,
    });
  }
  let code: TransportErrorCode = "failed";
  if (hasStatus(error, SFTP_STATUS.OP_UNSUPPORTED)) code = "unsupported";
  return new TransportError(`${action}: ${errorMessage(error)}`, code, { cause: error });
}
