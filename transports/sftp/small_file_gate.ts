/**
 * Small files in flight on one vessel's connections, bounded by the count
 * that is up. A call is bound to its connection once it starts, so a batch that
 * starts all at once is split evenly, and the connection whose TCP stream
 * grows slowest (CUBIC leaves slow start early when another stream fills the
 * queue) carries its share long after the others are done (wan, 100 x
 * 64 KiB: one connection still sending 1.3 s after the rest). With a little
 * per connection in flight, the rest wait here and go to the
 * connections that free up first.
 *
 * @module
 */
import type { TransportError } from "../transport.ts";

/**
 * Bytes of small files in flight per connection that is up. Streams that
 * share a link grow at very different rates (wan, 100 x 64 KiB: one CUBIC
 * stream left slow start at 680 segments, three others at 60-70, as its
 * burst filled the queue), so what a connection holds beyond its window only
 * waits there while a faster one idles: with 1 MiB the fast one had carried
 * its share 0.3 s before the others, 2.5 MB still bound to them. With
 * 512 KiB, wan took 1.86-2.08 s (median 1.98) against 1.96-2.14 (2.08), in
 * 8 pairs taking turns; 256 KiB left the fast stream short (2.02 s).
 */
export const SMALL_BYTES_PER_CONNECTION = 512 << 10;
/**
 * Bytes of small files in flight however few connections are up: with one
 * stream there is no slower one to bind files to, and a file holds its bytes
 * through its create's round trip too, before any of them leaves. On wan
 * (CUBIC, 100 x 64 KiB, taking turns) `Connections = 1` took 2.35-2.44 s
 * with 512 KiB, 2.00-2.06 with 1 MiB and 1.86-1.99 with 2 MiB; auto, while
 * its first connection is up alone, 1.83-2.05 s (median 1.98) with 2 MiB
 * against 1.90-2.21 (2.02) with 1 MiB, in 11 pairs.
 */
export const MIN_SMALL_BYTES = 2 << 20;

interface Waiter {
  readonly bytes: number;
  readonly admit: () => void;
  readonly refuse: (error: TransportError) => void;
}

/** First come, first served, up to {@linkcode SMALL_BYTES_PER_CONNECTION} per connection. */
export class SmallFileGate {
  readonly #connections: () => number;
  readonly #waiting: Waiter[] = [];
  #bytes = 0;
  #closed?: TransportError;

  /** `connections`: how many of those in use are up now. */
  constructor(connections: () => number) {
    this.#connections = connections;
  }

  /**
   * Waits until `bytes` more may be in flight (at once when nothing is) and
   * returns the call that gives them back, which may be called more than once.
   */
  async enter(bytes: number): Promise<() => void> {
    if (this.#closed) throw this.#closed;
    if (this.#waiting.length === 0 && this.#fits(bytes)) this.#bytes += bytes;
    // Counted by wake() as it lets the waiter in, so the next waiter's fit sees it.
    else await new Promise<void>((admit, refuse) => this.#waiting.push({ bytes, admit, refuse }));
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#bytes -= bytes;
      this.wake();
    };
  }

  /** Lets in the waiters that fit now, in order (more connections may be up). */
  wake(): void {
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0].bytes)) {
      const waiter = this.#waiting.shift()!;
      this.#bytes += waiter.bytes;
      waiter.admit();
    }
  }

  /** Refuses every waiter and every later call with `error`. */
  close(error: TransportError): void {
    this.#closed = error;
    for (const waiter of this.#waiting.splice(0)) waiter.refuse(error);
  }

  #fits(bytes: number): boolean {
    const capacity = Math.max(MIN_SMALL_BYTES, this.#connections() * SMALL_BYTES_PER_CONNECTION);
    return this.#bytes === 0 || this.#bytes + bytes <= capacity;
  }
}
