/** Parses the command line once; the only user of `node:util` parseArgs. */
import { parseArgs } from "node:util";
import { UsageError } from "./usage_error.ts";

/** The commands of the CLI contract. */
export const COMMANDS = ["run", "once", "check", "status"] as const;
export type Command = (typeof COMMANDS)[number];

/** What the user asked for. */
export interface Invocation {
  readonly command: Command;
  readonly configPath: string;
  readonly json: boolean;
  readonly timeoutSeconds?: number;
  readonly verbose: boolean;
  readonly help: boolean;
  readonly version: boolean;
}

/** Turns `args` into an {@linkcode Invocation}; throws {@linkcode UsageError}. */
export function parseInvocation(args: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        json: { type: "boolean" },
        timeout: { type: "string" },
        verbose: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error), { cause: error });
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) {
    throw new UsageError(`Unexpected argument "${positionals[1]}"`);
  }
  const command = positionals[0] ?? "run";
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(`Unknown command "${command}" (commands: ${COMMANDS.join(", ")})`);
  }
  let timeoutSeconds: number | undefined;
  if (values.timeout !== undefined) {
    timeoutSeconds = Number(values.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      throw new UsageError(
        `--timeout must be a positive number of seconds, not "${values.timeout}"`,
      );
    }
    if (command !== "once") throw new UsageError("--timeout goes with the once command");
  }
  if (values.json && command !== "status") {
    throw new UsageError("--json goes with the status command");
  }
  return {
    command: command as Command,
    configPath: values.config ?? "settings.ini",
    json: values.json ?? false,
    timeoutSeconds,
    verbose: values.verbose ?? false,
    help: values.help ?? false,
    version: values.version ?? false,
  };
}
