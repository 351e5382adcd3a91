/** Writes `[Vessel]` sections for test servers, for configs run through the CLI. */
import { type TestServer, testSshClient } from "./servers.ts";

/** A `[Vessel NAME]` section that reaches `server` with its test key and known_hosts. */
export function vesselIni(server: TestServer, name: string, extra: Record<string, string> = {}) {
  const keys: Record<string, string> = {
    Address: server.host,
    Port: String(server.port),
    Username: server.username,
    IdentityFile: server.identityFile,
    KnownHostsFile: server.knownHostsFile,
    TempDir: `${server.dir}/vessel-tmp`,
    // Never the machine's ~/.ssh/config: tests must not depend on who runs them.
    SSHConfigFile: "none",
    ...(testSshClient() ? { SSHClient: testSshClient()! } : {}),
    ...extra,
  };
  return `[Vessel ${name}]\n${
    Object.entries(keys).map(([key, value]) => `${key} = ${value}`).join("\n")
  }\n`;
}
