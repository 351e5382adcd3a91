/**
 * The shell commands the SFTP transport runs on a vessel, built only from
 * words quoted by {@linkcode shellQuote}. They need a POSIX shell, `cat`,
 * `rm`, and `openssl` or `sha256sum`.
 *
 * @module
 */
import { shellCommand, shellQuote } from "../shell_quote.ts";
import { partName } from "../transport.ts";

/**
 * Hashes stdin: `openssl dgst` when the vessel has it (several times faster
 * than coreutils without SHA-NI), else `sha256sum`.
 */
export const HASH_STDIN =
  "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi";

/** Exit status of {@linkcode assembleCommand} when a part is missing. */
export const EXIT_PART_MISSING = 66;

/**
 * Concatenates parts `0..count-1` of `partDir` into `tempPath`, optionally
 * syncs it, and prints its sha256. Every step is chained with `&&`, so a
 * failed `cat` can never look like success; on any failure the temp file is
 * removed and the failing status is the command's status. A temp file left
 * by an earlier try is removed first, so a stray writer cannot reach the new one.
 *
 * Part names are passed relative to `partDir` (after `cd` to its absolute,
 * quoted path) to keep the command short for files of many parts.
 */
export function assembleCommand(
  partDir: string,
  count: number,
  tempPath: string,
  sync: boolean,
): string {
  assertAbsolute(partDir);
  assertAbsolute(tempPath);
  const parts = Array.from({ length: count }, (_, index) => partName(index));
  const temp = shellQuote(tempPath);
  const steps = [
    shellCommand(["rm", "-f", "--", tempPath]),
    // A missing part exits with its own status before cat starts; nothing exists yet.
    ...(count === 0 ? [`: > ${temp}`] : [
      shellCommand(["cd", "--", partDir]),
      `for p in ${
        parts.map(shellQuote).join(" ")
      }; do test -f "$p" || exit ${EXIT_PART_MISSING}; done`,
      `${shellCommand(["cat", "--", ...parts])} > ${temp}`,
    ]),
    ...(sync ? [shellCommand(["sync", "--", tempPath])] : []),
    `{ ${HASH_STDIN}; } < ${temp}`,
  ];
  return `${steps.join(" && ")} || { s=$?; rm -f -- ${temp}; exit $s; }`;
}

/** Prints the sha256 of the file at `path`. */
export function hashCommand(path: string): string {
  assertAbsolute(path);
  return `{ ${HASH_STDIN}; } < ${shellQuote(path)}`;
}

/**
 * Checks what the transport needs: prints `cat ok` if `cat` runs and the
 * hasher's name and the hash of empty input.
 */
export const PROBE_COMMAND = [
  "cat </dev/null && echo 'cat ok'",
  "if command -v openssl >/dev/null 2>&1; then echo 'hasher openssl'; else echo 'hasher sha256sum'; fi",
  `printf '' | { ${HASH_STDIN}; }`,
].join(" && ");

/** The sha256 of empty input, which {@linkcode PROBE_COMMAND} must print. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** The lower-case hex sha256 at the start of a hasher's output, if any. */
export function parseSha256(output: string): string | undefined {
  const match = /^\\?([0-9a-f]{64})(?![0-9a-f])/m.exec(output);
  return match?.[1];
}

function assertAbsolute(path: string): void {
  if (!path.startsWith("/")) {
    throw new TypeError(`Cannot build a vessel command for "${path}": the path is not absolute`);
  }
}
