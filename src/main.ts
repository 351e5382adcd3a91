/**
 * The entry point: parses the command line, runs one command, and turns its
 * result or error into an exit status. The only module that exits or
 * installs signal handlers.
 */
import denoJson from "../deno.json" with { type: "json" };
import { loadConfig } from "./config/config.ts";
import { ConfigError } from "./config/errors.ts";
import { describeError, flushLog, log, print, setLogLevel } from "./log/logger.ts";
import { parseInvocation } from "./cli/args.ts";
import { COMMAND_HELP, MAIN_HELP } from "./cli/help.ts";
import { UsageError } from "./cli/usage_error.ts";
import type { Config } from "./config/types.ts";
import type { Transport } from "../transports/mod.ts";

/** Runs the CLI with `args`; resolves to the exit status. */
export async function main(args: readonly string[]): Promise<number> {
  const invocation = parseInvocation(args);
  if (invocation.version) {
    print(`contentmonster ${denoJson.version}`);
    return 0;
  }
  if (invocation.help) {
    print(args.some((arg) => arg in COMMAND_HELP) ? COMMAND_HELP[invocation.command] : MAIN_HELP);
    return 0;
  }
  if (invocation.verbose) setLogLevel("debug");
  const config = await loadConfig(invocation.configPath);
  for (const warning of config.warnings) log("warn", "", warning);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  try {
    switch (invocation.command) {
      case "run": {
        const transports = await openTransportsAhead(config);
        const { runDaemon } = await import("./cli/run.ts");
        return await runDaemon(config, stop.signal, transports);
      }
      case "once": {
        const transports = await openTransportsAhead(config);
        const { runOnce } = await import("./cli/once.ts");
        return await runOnce(config, stop.signal, transports, invocation.timeoutSeconds);
      }
      case "check": {
        const { checkVessels } = await import("./cli/check.ts");
        return await checkVessels(config);
      }
      case "status": {
        const { showStatus } = await import("./cli/status.ts");
        return await showStatus(config, invocation.json);
      }
      default:
        throw new UsageError(`Unknown command "${invocation.command satisfies never}"`);
    }
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  }
}

/**
 * Opens the vessels' transports before the command's modules load, so that
 * their logins overlap that (see transports_ahead.ts).
 */
async function openTransportsAhead(config: Config): Promise<Transport[]> {
  return (await import("./cli/transports_ahead.ts")).openTransportsAhead(config);
}

/** The exit status for an error that escaped a command. */
export function exitStatusFor(error: unknown): number {
  return error instanceof ConfigError || error instanceof UsageError ? 2 : 1;
}

if (import.meta.main) {
  let status: number;
  try {
    status = await main(Deno.args);
  } catch (error) {
    status = exitStatusFor(error);
    log("error", "", describeError(error));
    if (error instanceof UsageError) log("error", "", "see `contentmonster --help`");
  }
  flushLog();
  Deno.exit(status);
}
