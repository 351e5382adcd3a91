/**
 * How many deliveries one vessel runs at once. A small file costs round
 * trips and per-file work, not bandwidth: many of them in flight let their
 * SFTP requests share pipe writes and their bookkeeping share the store's
 * commits (1000 x 16 KiB on loopback: 8 in flight 5.5 s, 32 in flight
 * 3.5-4.2 s). On a WAN a small file's time is round trips, so a whole
 * batch should be under way at once (wan, 100 x 64 KiB: 32 in flight 2.8 s,
 * 128 in flight 2.4-2.7 s; buffers of 32 MiB at most). A large file of one
 * part is held whole while it is sent (up to ChunkSize), so large ones keep
 * the transport's `parallelDeliveries` and memory keeps following ChunkSize.
 *
 * @module
 */

/** Files up to this size (and one part) count as small. */
export const SMALL_FILE_BYTES = 256 << 10;
/** Deliveries of small files one vessel may run at once. */
export const SMALL_IN_FLIGHT = 128;

/** The deliveries running for one vessel, by size class. */
export class DeliverySlots {
  readonly #large: number;
  readonly #total: number;
  readonly #smallBytes: number;
  readonly #running = new Map<number, boolean>();
  #largeRunning = 0;

  /**
   * `large`: deliveries of files larger than `smallBytes` at once (the
   * transport's `parallelDeliveries`); `total`: deliveries at once in all.
   */
  constructor(large: number, smallBytes: number, total = Math.max(large, SMALL_IN_FLIGHT)) {
    this.#large = Math.max(1, large);
    this.#total = Math.max(this.#large, total);
    this.#smallBytes = smallBytes;
  }

  /** How many more deliveries may start now, if they are small. */
  get free(): number {
    return this.#total - this.#running.size;
  }

  /** Whether a delivery of a file of `size` bytes may start now. */
  fits(size: number): boolean {
    if (this.#running.size >= this.#total) return false;
    return size <= this.#smallBytes || this.#largeRunning < this.#large;
  }

  /** Delivery `id` of a file of `size` bytes starts. */
  start(id: number, size: number): void {
    const large = size > this.#smallBytes;
    this.#running.set(id, large);
    if (large) this.#largeRunning++;
  }

  /** Delivery `id` ended. */
  end(id: number): void {
    if (this.#running.get(id)) this.#largeRunning--;
    this.#running.delete(id);
  }
}
