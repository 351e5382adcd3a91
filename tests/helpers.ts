/** Small helpers shared by tests. */
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
