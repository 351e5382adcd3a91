/**
 * Runs the real CLI as a child process against a throw-away shore: source
 * directories, local vessels and a config file in one temp directory.
 */
import { createHash } from "node:crypto";
import denoJson from "../deno.json" with { type: "json" };

/** The CLI's entry point, for `deno run`. */
export const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
/**
 * What `deno task start` grants the CLI, read from deno.json: the tests run
 * the daemon as operators do (see "Permissions" in the README for why that
 * is everything).
 */
export const PERMISSIONS = permissionFlags(denoJson.tasks.start);
/** The V8 flag of `deno task start` and the compiled binary, for runs that measure memory. */
export const V8_FLAGS = denoJson.tasks.start.split(/\s+/).find((word) =>
  word.startsWith("--v8-flags=")
)!;

/** The result of a finished CLI run. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A temp directory holding a shore, its vessels and its config. */
export class Workspace {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  static async create(): Promise<Workspace> {
    return new Workspace(await Deno.makeTempDir({ prefix: "cm-e2e-" }));
  }

  /** Absolute path of `relative` inside the workspace. */
  path(relative: string): string {
    return `${this.dir}/${relative}`;
  }

  /** Writes a file (creating parent directories) and returns its path. */
  async write(relative: string, data: Uint8Array | string): Promise<string> {
    const path = this.path(relative);
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    if (typeof data === "string") await Deno.writeTextFile(path, data);
    else await Deno.writeFile(path, data);
    return path;
  }

  /** Creates directories inside the workspace. */
  async mkdir(...relatives: string[]): Promise<void> {
    for (const relative of relatives) await Deno.mkdir(this.path(relative), { recursive: true });
  }

  /** Writes `settings.ini` and returns its path. */
  config(text: string): Promise<string> {
    return this.write("settings.ini", text);
  }

  cleanup(): Promise<void> {
    return Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Environment for child processes: quiet about colour, debug logs when asked. */
function childEnv(extra: Record<string, string>): Record<string, string> {
  return { NO_COLOR: "1", ...extra };
}

/** What a shell command printed, and its exit status. */
export interface ShellResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A finished child's exit status and output, as text. */
export function decoded(output: Deno.CommandOutput): ShellResult {
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs `command` with `/bin/sh -c` to completion, as a vessel's login shell would. */
export async function runShell(
  command: string,
  env?: Record<string, string>,
): Promise<ShellResult> {
  const output = await new Deno.Command("/bin/sh", {
    args: ["-c", command],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return decoded(output);
}

/** Runs the CLI to completion. */
export async function runCli(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<CliResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN, ...args],
    env: childEnv(options.env ?? {}),
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return decoded(output);
}

/** A CLI process left running (the daemon), with its stderr collected. */
export class CliProcess {
  readonly #child: Deno.ChildProcess;
  readonly #stderr: Promise<void>;
  #log = "";
  readonly status: Promise<Deno.CommandStatus>;

  constructor(args: string[], env: Record<string, string> = {}) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MAIN, ...args],
      env: childEnv(env),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.status = child.status;
    this.#stderr = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) this.#log += decoder.decode(chunk);
    })();
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Everything written to stderr so far. */
  get log(): string {
    return this.#log;
  }

  /** Waits until the log contains `text` (or `timeoutMs` passes: throws). */
  async waitForLog(pattern: string | RegExp, timeoutMs = 20_000): Promise<void> {
    await waitFor(
      () => typeof pattern === "string" ? this.#log.includes(pattern) : pattern.test(this.#log),
      timeoutMs,
      () => `log line ${pattern}; log so far:\n${this.#log}`,
    );
  }

  kill(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // already exited
    }
  }

  /** Waits for the exit and the end of its output. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await this.#stderr;
    return status;
  }
}

/** Polls `condition` every 20 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string | (() => string),
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      const said = typeof what === "string" ? what : what();
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${said}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The sha256 of bytes, hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The sha256 of a file, or `undefined` when it does not exist. */
export async function fileSha256(path: string): Promise<string | undefined> {
  try {
    return sha256(await Deno.readFile(path));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Pseudo-random bytes, reproducible by seed. */
export function randomBytes(length: number, seed = 1): Uint8Array {
  const data = new Uint8Array(length);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    data[i] = state;
    data[i + 1] = state >>> 8;
    data[i + 2] = state >>> 16;
    data[i + 3] = state >>> 24;
  }
  return data;
}

/** Every regular file below `dir`, as paths relative to it. */
export async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(`${dir}/${prefix}`)) {
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory) files.push(...await listFiles(dir, relative));
      else files.push(relative);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return files.sort();
}

/** Whether anything (a file, a directory, a dangling link) is at `path`. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** {@linkcode pathExists}, for a check that must look at that very instant. */
export function pathExistsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The permission flags (`--allow-…`, `--deny-…`, `-A`) of a `deno run` or `deno compile` line. */
export function permissionFlags(commandLine: string): string[] {
  return commandLine.split(/\s+/).filter((word) => /^(--(allow|deny)-|-A$)/.test(word));
}
