/**
 * The shell commands the SFTP transport runs on a vessel, built only from
 * words quoted by {@linkcode shellQuote}. They need a POSIX shell, `cat`,
 * `rm`, and `openssl` or `sha256sum`.
 *
 * @module
 */
import { shellCommand, shellQuote } from "../shell_quote.ts";

/**
 * Sets `h` to the hasher: `openssl dgst` when the vessel has it (several
 * times faster than coreutils without SHA-NI), else `sha256sum`. Both hash
 * stdin, or the files named, printing `HEX *NAME` or `HEX  NAME`.
 */
const PICK_HASHER =
  "if command -v openssl >/dev/null 2>&1; then h='openssl dgst -sha256 -r'; else h=sha256sum; fi";

/** Hashes stdin with the hasher {@linkcode PICK_HASHER} picks. */
export const HASH_STDIN = `${PICK_HASHER}; $h`;

/** Exit status of {@linkcode assembleCommand} when a part is missing. */
export const EXIT_PART_MISSING = 66;

/**
 * Makes files the command creates private (0600) and creation exclusive:
 * with `set -C` a `>` onto something already there (a link planted since
 * the `rm -f`) fails instead of writing through it.
 */
const PRIVATE_CREATE = "umask 077 && set -C";

/**
 * Checks, before a byte is written, that file descriptor `fd` is a regular
 * file: `set -C` creates a new file exclusively but opens something already
 * there that is not a regular file (a link to a FIFO or a device, planted
 * since the `rm -f` by a user who can write the destination directory), and
 * the file's bytes would flow into it. dash and bash never open an existing
 * regular file under `set -C`, so a regular file here is the one just made.
 */
function regularFileCheck(fd: number): string {
  return `{ [ -f /dev/fd/${fd} ] || { echo "the temp file is not a regular file ` +
    `(a link planted in the destination directory?): nothing written" >&2; false; }; }`;
}

/**
 * The step that gives the file open as descriptor `fd` the permission bits
 * of `mode` (none without a mode). Through the descriptor, not the name: a
 * `chmod` of the name at publish followed a link that a user who can write
 * the destination directory swapped in, and gave a file of the login user
 * (its SSH key) that mode.
 */
function modeChange(fd: number, mode: number | undefined): string[] {
  if (mode === undefined) return [];
  return [`chmod -- ${(mode & 0o777).toString(8).padStart(3, "0")} /dev/fd/${fd}`];
}

/**
 * Part names per `cat` in {@linkcode assembleCommand}, and at most per batch
 * of {@linkcode streamAssemblyCommand}: a few KiB of arguments.
 */
export const CAT_BATCH = 500;

/**
 * Concatenates parts `0..count-1` of `partDir` into `tempPath`, optionally
 * syncs it, and prints its sha256. Every step is chained with `&&`, so a
 * failed `cat` can never look like success; on any failure the temp file is
 * removed and the failing status is the command's status. A temp file left
 * by an earlier try is removed first, so a stray writer cannot reach the new
 * one, and the new one is created exclusively, 0600.
 *
 * Part names come from a counter in the shell, never from the command line,
 * so its length does not grow with the part count (Linux refuses a `sh -c`
 * argument over 128 KiB: about 6,600 part names).
 */
export function assembleCommand(
  partDir: string,
  count: number,
  tempPath: string,
  sync: boolean,
  mode?: number,
): string {
  assertAbsolute(partDir);
  assertAbsolute(tempPath);
  assertCount(count);
  const temp = shellQuote(tempPath);
  const steps = [
    PRIVATE_CREATE,
    shellCommand(["rm", "-f", "--", tempPath]),
    // A missing part exits with its own status before cat starts; nothing exists yet.
    ...(count === 0
      ? [`{ ${[regularFileCheck(1), ...modeChange(1, mode)].join(" && ")}; } > ${temp}`]
      : [
        shellCommand(["cd", "--", partDir]),
        `n=0 && while [ $n -lt ${count} ]; do test -f $n.part || exit ${EXIT_PART_MISSING}; ` +
        `n=$((n + 1)); done`,
        // One cat per batch of names, so 10,000 parts cost 20 process starts, not 10,000.
        `{ ${
          [
            regularFileCheck(1),
            `{ n=0 f=0; while [ $n -lt ${count} ]; do b=$((n + ${CAT_BATCH})); ` +
            `[ $b -le ${count} ] || b=${count}; set --; ` +
            `while [ $n -lt $b ]; do set -- "$@" $n.part; n=$((n + 1)); done; ` +
            `cat -- "$@" || { f=1; break; }; done; [ $f = 0 ]; }`,
            ...modeChange(1, mode),
          ].join(" && ")
        }; } > ${temp}`,
      ]),
    ...(sync ? [shellCommand(["sync", "--", tempPath])] : []),
    `{ ${HASH_STDIN}; } < ${temp}`,
  ];
  return `${steps.join(" && ")} || { s=$?; rm -f -- ${temp}; exit $s; }`;
}

/** Exit status of {@linkcode streamAssemblyCommand} when its input ended before the last part. */
export const EXIT_STOPPED = 65;

/**
 * The command behind a streamed assembly: started before the parts are all
 * uploaded, it reads one line per batch on stdin, the last index of the
 * parts now whole after those before (`0..count-1` in batches, in order;
 * anything else stops it), appends those parts of `partDir` to `tempPath`
 * with one `cat` and feeds them to the hasher, printing `ok N BYTES` (parts
 * and bytes so far) after each batch. A batch costs three process starts
 * whatever its parts: when an early part comes late, the parts behind it go
 * in one batch, not one after the other at the end of the file. Only its own
 * counter names files: what it reads from stdin is only compared as a
 * number. Each part is read twice from the page cache rather than copied
 * through `tee`: `cat` into a file copies in the kernel, and `tee`'s 8 KiB
 * buffer costs a context switch per 8 KiB.
 *
 * After the last part it checks that every part was appended, optionally
 * syncs the temp file, and prints `parts COUNT BYTES end`, the
 * hasher's output and `size BYTES`. On any failure it removes the temp file
 * and exits non-zero: {@linkcode EXIT_PART_MISSING} with a line `missing N` for a
 * missing part, {@linkcode EXIT_STOPPED} when stdin ends early — which is
 * also what a dropped connection or an abort looks like, so the command
 * never outlives its caller. SIGPIPE and SIGHUP are ignored, so a closed
 * channel makes writes fail (and the temp file go) instead of killing the
 * shell before it cleans up.
 */
export function streamAssemblyCommand(
  partDir: string,
  count: number,
  tempPath: string,
  sync: boolean,
  mode?: number,
): string {
  assertAbsolute(partDir);
  assertAbsolute(tempPath);
  assertCount(count);
  const temp = shellQuote(tempPath);
  // fd 3: the report (captured), 4: progress (the channel), 5: the temp file,
  // 6: the temp file again, for reading: the hasher gets the bytes just
  // appended to the file that is published, not a second read of the part.
  const perBatch = [
    `read -r j && [ "$j" -ge $n ] 2>/dev/null && [ "$j" -lt ${count} ] || ` +
    `{ echo stopped >&3; exit ${EXIT_STOPPED}; }`,
    "set --",
    `while [ $n -le "$j" ]; do [ -e $n.part ] || { echo "missing $n" >&3; exit ${EXIT_PART_MISSING}; }; ` +
    `set -- "$@" $n.part; n=$((n + 1)); done`,
    // With `sync`, each batch is flushed as it is appended, while the next parts upload: one
    // flush of the whole file after the last part left 1 GiB to write then (1.5 s of a 11 s
    // delivery over loopback, on a disk that syncs 300 MB/s).
    `cat -- "$@" >&5 && cat <&6 && ${sync ? `sync -- ${temp} && ` : ""}` +
    `t=$(wc -c < ${temp}) && t=$((t)) || exit 1`,
    `echo "ok $n $t" >&4 || exit ${EXIT_STOPPED}`,
  ].join("; ");
  const loop =
    `${regularFileCheck(5)} || exit 1; n=0 t=0; while [ $n -lt ${count} ]; do ${perBatch}; done; ` +
    [...modeChange(5, mode), `echo "parts $n $t end" >&3`].join(" && ");
  const steps = [
    PRIVATE_CREATE,
    `rm -f -- ${temp}`,
    count === 0 ? ":" : `{ ${shellCommand(["cd", "--", partDir])} || exit ${EXIT_PART_MISSING}; }`,
    `r=$({ { ${loop}; } 5> ${temp} 6< ${temp} | { ${HASH_STDIN}; }; } 3>&1)`,
    // The size is the temp file's, taken after the last batch: no second `wc` at the end.
    `case $r in *"parts ${count} "*" end"*) ;; *) false ;; esac`,
    `s=\${r#*"parts ${count} "} && s=\${s%%" end"*}`,
    sync ? `sync -- ${temp}` : ":",
    `printf '%s\\nsize %s\\n' "$r" "$s"`,
  ];
  const cleanup = `e=$?; rm -f -- ${temp}; ` +
    `case $r in *"missing "*) e=${EXIT_PART_MISSING} ;; *stopped*) e=${EXIT_STOPPED} ;; esac; ` +
    `printf '%s\\n' "$r"; exit $e`;
  return `trap '' PIPE HUP; exec 4>&1; r=; ${steps.join(" && ")} || { ${cleanup}; }`;
}

/**
 * Removes ContentMonster's temp files (`.contentmonster-*.tmp`) below `dir`
 * not modified for `minutes`, without following links, printing each path;
 * with `others`, those of other shores (another instance id) only after
 * `others.minutes`.
 */
export function leftoverTempCommand(
  dir: string,
  minutes: number,
  others?: { readonly instanceId: string; readonly minutes: number },
): string {
  assertAbsolute(dir);
  const age = (value: number) => `-mmin +${Math.floor(value)}`;
  let select = `-name '.contentmonster-*.tmp' ${age(minutes)}`;
  if (others) {
    if (!/^[0-9a-f]{12}$/.test(others.instanceId)) {
      throw new RangeError(`"${others.instanceId}" is not a shore's instance id`);
    }
    const ours = `-name '.contentmonster-${others.instanceId}-*.tmp'`;
    select = `\\( ${ours} ${age(minutes)} -o ! ${ours} -name '.contentmonster-*.tmp' ` +
      `${age(Math.max(minutes, others.minutes))} \\)`;
  }
  return `${shellCommand(["find", "-P", dir])} -type f ${select} -print -exec rm -f -- {} +`;
}

/** Prints the sha256 of the file at `path`, after flushing it to disk if `sync`. */
export function hashCommand(path: string, sync = false): string {
  assertAbsolute(path);
  const hash = `{ ${HASH_STDIN}; } < ${shellQuote(path)}`;
  return sync ? `${shellCommand(["sync", "--", path])} && ${hash}` : hash;
}

/** Files of one directory for {@linkcode batchHashCommand}. */
export interface HashGroup {
  readonly dir: string;
  /** Names in `dir`: our own temp names, which start with "." and hold only `[.A-Za-z0-9_-]`. */
  readonly names: readonly string[];
}

/** Our temp names: nothing a hasher would take for an option, quote or escape. */
const PLAIN_NAME = "\\.[.A-Za-z0-9_-]+";
const PLAIN_NAME_ONLY = new RegExp(`^${PLAIN_NAME}$`);
/** A hasher's line for one of our temp names (openssl `HEX *NAME`, sha256sum `HEX  NAME`). */
const HASH_LINE = new RegExp(`^([0-9a-f]{64}) [ *](${PLAIN_NAME})$`);

/**
 * Prints the sha256 of every file of `groups` with one hasher process per
 * directory, not one per file: a batch of small files costs one command.
 * Each directory's lines follow a line `@ INDEX` (its place in `groups`),
 * one `HEX *NAME` (openssl) or `HEX  NAME` (sha256sum) per file; a file
 * that cannot be read has no line. Parse with {@linkcode parseBatchHashes}.
 */
export function batchHashCommand(groups: readonly HashGroup[]): string {
  const steps = groups.map((group, index) => {
    assertAbsolute(group.dir);
    assertPlainNames(group.names);
    return `echo '@ ${index}'; ${shellCommand(["cd", "--", group.dir])} && $h ${
      group.names.join(" ")
    }`;
  });
  return `${PICK_HASHER}; ${steps.join("; ")}`;
}

/**
 * The hashes {@linkcode batchHashCommand} printed, keyed by
 * `INDEX/NAME`; lines it does not recognise are skipped.
 */
export function parseBatchHashes(output: string): Map<string, string> {
  const hashes = new Map<string, string>();
  let group: string | undefined;
  for (const line of output.split("\n")) {
    const marker = /^@ (\d+)$/.exec(line);
    if (marker) {
      group = marker[1];
      continue;
    }
    const hashed = HASH_LINE.exec(line);
    if (hashed && group !== undefined) hashes.set(`${group}/${hashed[2]}`, hashed[1]);
  }
  return hashes;
}

/**
 * Succeeds when the vessel's `syncfs(2)` reports a failed write: Linux 5.8
 * and later. Before, it returned 0 whatever writeback met, where an fsync of
 * the file would have failed.
 */
const SYNCFS_REPORTS_FAILURES = `[ "$(uname -s 2>/dev/null)" = Linux ] && ` +
  `v=$(uname -r 2>/dev/null) && v1=\${v%%.*} && v2=\${v#*.} && v2=\${v2%%[!0-9]*} && ` +
  `[ "$v1" -eq "$v1" ] 2>/dev/null && [ "$v2" -eq "$v2" ] 2>/dev/null && ` +
  `{ [ "$v1" -gt 5 ] || { [ "$v1" -eq 5 ] && [ "$v2" -ge 8 ]; }; }`;

/**
 * A hasher that stays, so that hashing a batch costs one round trip instead
 * of a new session's two or three. It reads requests on stdin (see
 * {@linkcode residentHashRequest} and {@linkcode residentFlushRequest}): a
 * tag (digits, then ` s` to flush the directory's file system after), a
 * directory, names in it one per line, and a line `.`. For each it prints
 * `@ TAG`, one hasher line per file it could read, `s TAG` once `sync -f`
 * flushed the directory's file system (one flush for every file written
 * there: `syncfs(2)`, where an fsync per file commits the journal once per
 * file; only where a failed write would be reported, see
 * {@linkcode SYNCFS_REPORTS_FAILURES}, asked at the first flush: most
 * hashers flush nothing), and `= TAG`; it ends with its input. What it reads reaches the
 * hasher and `sync` only as quoted words (`cd -- "$d"`, `"$@"`): nothing
 * read is evaluated.
 */
export const RESIDENT_HASHER_COMMAND = `${PICK_HASHER}; f=; ` +
  `while IFS= read -r t; do s=; case $t in *' s') s=1; t=\${t% s} ;; esac; ` +
  `case $t in ''|*[!0-9]*) exit ${EXIT_STOPPED} ;; esac; ` +
  `IFS= read -r d || exit ${EXIT_STOPPED}; set --; ` +
  `while IFS= read -r n && [ "$n" != . ]; do set -- "$@" "$n"; done; ` +
  `echo "@ $t"; [ $# = 0 ] || (cd -- "$d" && exec $h "$@") </dev/null 2>/dev/null; ` +
  `if [ -n "$s" ]; then [ -n "$f" ] || { f=n; ${SYNCFS_REPORTS_FAILURES} && f=y; }; ` +
  `[ "$f" = y ] && sync -f -- "$d" </dev/null >/dev/null 2>&1 && echo "s $t"; fi; ` +
  `echo "= $t"; done`;

/**
 * The request for the files `group` names to {@linkcode RESIDENT_HASHER_COMMAND},
 * or `undefined` when its directory's name holds a line break (a line per
 * word cannot carry it: such a group goes to {@linkcode batchHashCommand}).
 */
export function residentHashRequest(tag: number, group: HashGroup): string | undefined {
  assertAbsolute(group.dir);
  assertPlainNames(group.names);
  if (!Number.isSafeInteger(tag) || tag < 0) throw new RangeError(`Bad hash request tag ${tag}`);
  if (group.dir.includes("\n")) return undefined;
  return `${tag}\n${group.dir}\n${group.names.join("\n")}\n.\n`;
}

/**
 * The request that has {@linkcode RESIDENT_HASHER_COMMAND} flush the file
 * system holding `dir`, or `undefined` when `dir` holds a line break.
 */
export function residentFlushRequest(tag: number, dir: string): string | undefined {
  assertAbsolute(dir);
  if (!Number.isSafeInteger(tag) || tag < 0) throw new RangeError(`Bad flush request tag ${tag}`);
  if (dir.includes("\n")) return undefined;
  return `${tag} s\n${dir}\n.\n`;
}

/** One line of {@linkcode RESIDENT_HASHER_COMMAND}'s output, if it is one of its own. */
export type ResidentHasherLine =
  | { readonly kind: "start" | "end" | "flushed"; readonly tag: number }
  | { readonly kind: "hash"; readonly name: string; readonly sha256: string };

const MARKERS = { "@": "start", "=": "end", "s": "flushed" } as const;

/** Reads one line the resident hasher printed (without its line break). */
export function parseResidentHasherLine(line: string): ResidentHasherLine | undefined {
  const marker = /^([@=s]) (\d+)$/.exec(line);
  if (marker) return { kind: MARKERS[marker[1] as keyof typeof MARKERS], tag: Number(marker[2]) };
  const hashed = HASH_LINE.exec(line);
  return hashed ? { kind: "hash", name: hashed[2], sha256: hashed[1] } : undefined;
}

/**
 * Copies the first `blocks` blocks of `blockSize` bytes of the file at
 * `path` (fewer if the file is shorter; `dd` is in POSIX, `head -c` is not)
 * into `copyPath`, a new file created exclusively, 0600, and prints the
 * copy's sha256; on failure the copy is removed. A resume completes the
 * copy, not the file left: the try that wrote that file may still hold it
 * open on a connection the shore gave up on, and its writes stuck on the
 * way (of another version of the source, by then) would land in a file
 * already verified.
 */
export function prefixCopyCommand(
  path: string,
  copyPath: string,
  blocks: number,
  blockSize: number,
): string {
  assertAbsolute(path);
  assertAbsolute(copyPath);
  if (!Number.isSafeInteger(blocks) || blocks < 0 || !Number.isSafeInteger(blockSize)) {
    throw new RangeError(`Cannot copy ${blocks} blocks of ${blockSize} bytes of "${path}"`);
  }
  const copy = shellQuote(copyPath);
  const dd = shellCommand(["dd", `if=${path}`, `bs=${blockSize}`, `count=${blocks}`]);
  const steps = [
    PRIVATE_CREATE,
    shellCommand(["rm", "-f", "--", copyPath]),
    `{ ${regularFileCheck(1)} && ${dd} 2>/dev/null; } > ${copy}`,
    `{ ${HASH_STDIN}; } < ${copy}`,
  ];
  return `${steps.join(" && ")} || { s=$?; rm -f -- ${copy}; exit $s; }`;
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

function assertPlainNames(names: readonly string[]): void {
  for (const name of names) {
    if (!PLAIN_NAME_ONLY.test(name)) {
      throw new TypeError(`Cannot hash "${name}" in a batch: not one of our temp names`);
    }
  }
}

function assertCount(count: number): void {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new RangeError(`Cannot assemble ${count} parts: not a count`);
  }
}

function assertAbsolute(path: string): void {
  if (!path.startsWith("/")) {
    throw new TypeError(`Cannot build a vessel command for "${path}": the path is not absolute`);
  }
}
