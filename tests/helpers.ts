/** Small helpers shared by tests. */
import type { VesselConfig } from "../src/config/types.ts";

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
