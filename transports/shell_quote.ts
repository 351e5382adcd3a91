/**
 * The one function that turns values into POSIX shell words. Every remote
 * command is built from its output, so no file name can inject a command.
 *
 * @module
 */

const SAFE_WORD = /^[A-Za-z0-9_./,:@%+-]+$/;

/**
 * Quotes `value` as one POSIX shell word that the shell reads back as exactly
 * `value`: safe words stay bare, everything else goes in single quotes with
 * each `'` written as `'\''`. Newlines, `$`, backticks and non-ASCII are kept
 * literally. A leading `-` is not escaped (quoting cannot stop a command
 * from reading it as an option): pass absolute paths or put `--` before.
 *
 * @throws {TypeError} if `value` contains a NUL byte, which no shell word can hold.
 */
export function shellQuote(value: string): string {
  if (value.includes("\0")) {
    throw new TypeError(
      `Cannot quote ${JSON.stringify(value)} for a shell: it contains a NUL byte`,
    );
  }
  if (SAFE_WORD.test(value)) return value;
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Joins `words` into one command line, each word quoted with {@linkcode shellQuote}. */
export function shellCommand(words: readonly string[]): string {
  return words.map(shellQuote).join(" ");
}
