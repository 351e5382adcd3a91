/** Small helpers shared by tests. */
import { setTimeout as sleep } from "node:timers/promises";
import type { VesselConfig } from "../src/config/types.ts";
import { type Transport, TransportError } from "../transports/transport.ts";

/** A local-transport vessel whose `/` lies at `root`. */
export function localVessel(
  name: string,
  root: string,
  overrides: Partial<VesselConfig> = {},
): VesselConfig {
  return {
    name,
    transport: "local",
    root,
    port: 22,
    username: "nobody",
    knownHostsFile: "/dev/null",
    strictHostKeyChecking: "yes",
    tempDir: "/tmp/.ContentMonster",
    ignoreDirs: [],
    timeout: 10,
    fsync: true,
    ...overrides,
  };
}

/**
 * `inner`, refusing the vessel operations named in `gated` (every one but
 * `close` when not given) with a connection error while `state.down`.
 */
export function gatedTransport(
  inner: Transport,
  state: { down: boolean },
  gated?: ReadonlySet<string>,
): Transport {
  return new Proxy(inner, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (state.down && (gated ? gated.has(String(name)) : name !== "close")) {
          throw new TransportError(
            `Cannot connect to vessel "${target.vessel}": connection refused`,
            "connection",
          );
        }
        return value.apply(target, args);
      };
    },
  });
}

/** Waits until `condition` holds, polling every 10 ms; throws naming `what` after 10 s. */
export async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * A hostile local user in another process, exchanging `dir` with a symbolic
 * link to `victim` (`renameat2(RENAME_EXCHANGE)`, so the path never goes
 * missing) and back as fast as it can until `body` is done.
 */
export async function whileSwapped(
  dir: string,
  victim: string,
  body: () => Promise<void>,
): Promise<void> {
  const link = `${dir}.link`;
  const stop = `${dir}.stop`;
  await Deno.symlink(victim, link);
  const swapper = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `
      const [dir, link, stop] = ${JSON.stringify([dir, link, stop])};
      const libc = Deno.dlopen("libc.so.6", {
        renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
      });
      const AT_FDCWD = -100, RENAME_EXCHANGE = 2;
      const path = (p) => new TextEncoder().encode(p + "\\0");
      const [from, to] = [path(dir), path(link)];
      const until = Date.now() + 30_000;
      for (let turn = 0; Date.now() < until; turn++) {
        if (turn % 256 === 0) { try { Deno.lstatSync(stop); break; } catch { /* go on */ } }
        libc.symbols.renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE);
      }
      // Leave the real directory in its place.
      if (Deno.lstatSync(dir).isSymlink) libc.symbols.renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE);`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await body();
  } finally {
    await Deno.writeTextFile(stop, "");
    const status = await Promise.race([swapper.status, sleep(5_000, undefined)]);
    if (!status) swapper.kill("SIGKILL");
    await swapper.status;
  }
}
