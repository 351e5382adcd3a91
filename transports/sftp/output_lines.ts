/**
 * A command's output cut into lines as it arrives, UTF-8 decoded across
 * chunk boundaries.
 *
 * @module
 */

/** Hands each whole line (without its line break) to `line`. */
export class OutputLines {
  readonly #decoder = new TextDecoder();
  readonly #line: (line: string) => void;
  #partial = "";

  constructor(line: (line: string) => void) {
    this.#line = line;
  }

  /** Takes the next chunk of output. */
  push(data: Uint8Array): void {
    const lines = (this.#partial + this.#decoder.decode(data, { stream: true })).split("\n");
    this.#partial = lines.pop()!;
    for (const line of lines) this.#line(line);
  }

  /** The output ended: a last line without a line break is a line too. */
  end(): void {
    const last = this.#partial + this.#decoder.decode();
    this.#partial = "";
    if (last) this.#line(last);
  }
}
