/**
 * The only module that writes to the console. Lines name their subject first;
 * under systemd (`JOURNAL_STREAM` set) they carry `<N>` priority prefixes and
 * no timestamps, since journald adds its own.
 */
import { errorMessage } from "../../lib/error_message.ts";

/** Severity, ordered from most to least severe. */
export type Level = "error" | "warn" | "info" | "debug";

const PRIORITY: Record<Level, number> = { error: 3, warn: 4, info: 6, debug: 7 };

let threshold: Level = (Deno.env.get("CONTENTMONSTER_LOG") as Level | undefined) ?? "info";
if (!(threshold in PRIORITY)) threshold = "info";
const journald = Deno.env.get("JOURNAL_STREAM") !== undefined;

/** Sets the most detailed level that is still written. */
export function setLogLevel(level: Level): void {
  threshold = level;
}

/** Writes one log line for `subject` (a vessel, a file, or "" for the daemon). */
export function log(level: Level, subject: string, message: string): void {
  if (PRIORITY[level] > PRIORITY[threshold]) return;
  const text = subject ? `${subject}: ${message}` : message;
  const line = journald
    ? `<${PRIORITY[level]}>${text}`
    : `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${text}`;
  pending.push(line.replaceAll("\n", "\\n"));
  // An error or warning may be the last words of a process about to die: it goes at once.
  if (PRIORITY[level] <= PRIORITY.warn) flushLog();
  else if (pending.length === 1) queueMicrotask(flushLog);
}

/**
 * Lines of this turn not yet written: written together at its end, one
 * system call for a turn's lines instead of one each (1000 small files log
 * 2000 lines, and each write to a pipe wakes its reader: 565-605 ms against
 * 582-695 for `once` of them over an in-memory transport, 5 pairs).
 */
let pending: string[] = [];

/** Writes the lines logged so far; before the process exits, since `Deno.exit` ends this turn. */
export function flushLog(): void {
  if (pending.length === 0) return;
  const text = pending.join("\n");
  pending = [];
  // deno-lint-ignore no-console
  console.error(text);
}

/** A logger bound to one subject. */
export interface Logger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

/** A logger whose lines all start with `subject`. */
export function logger(subject: string): Logger {
  return {
    error: (message) => log("error", subject, message),
    warn: (message) => log("warn", subject, message),
    info: (message) => log("info", subject, message),
    debug: (message) => log("debug", subject, message),
  };
}

/** Writes command output (status tables, help) to stdout. */
export function print(text: string): void {
  // deno-lint-ignore no-console
  console.log(text);
}

export { errorMessage } from "../../lib/error_message.ts";

/** Describes an error with its cause chain, for logs and the exit message. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    const message = errorMessage(current);
    if (!parts.some((part) => part.includes(message))) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}
