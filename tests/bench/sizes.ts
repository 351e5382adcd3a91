/**
 * Sizes given to the benches in MiB, as bytes. Multiplied, not shifted:
 * `4096 << 20` is 0 in JavaScript's 32-bit shifts, and a "4 GiB" bench then
 * sent an empty file.
 *
 * @module
 */

/** The bytes of `option` MiB (`fallback` when absent); throws unless a positive whole count. */
export function mebibytes(name: string, option: string | undefined, fallback: number): number {
  const mib = option === undefined ? fallback : Number(option);
  if (!Number.isSafeInteger(mib) || mib <= 0) {
    throw new TypeError(`--${name} ${option}: a whole number of MiB above 0`);
  }
  return mib * 1024 * 1024;
}
