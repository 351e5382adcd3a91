/**
 * An SFTP transport that reaches a test server through the fault proxy, for
 * tests that cut, slow or delay its link.
 */
import type { VesselConfig } from "../src/config/types.ts";
import type { TransportLogger } from "../transports/transport.ts";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { FaultProxy } from "./fault_proxy.ts";
import type { TestServer } from "./servers.ts";

/** A fresh fault proxy in front of `server`, and a known hosts file that names it. */
export async function proxyTo(
  server: TestServer,
): Promise<{ proxy: FaultProxy; knownHostsFile: string }> {
  const proxy = await FaultProxy.start({ target: { hostname: "127.0.0.1", port: server.port } });
  const knownHostsFile = `${server.dir}/known_hosts_proxy`;
  await Deno.writeTextFile(knownHostsFile, `[127.0.0.1]:${proxy.port} ${server.hostPublicKey}\n`);
  return { proxy, knownHostsFile };
}

/** A transport through a fresh proxy, the lines it logged (not debug), and cleanup. */
export async function proxiedTransport(
  server: TestServer,
  options: {
    connections?: number;
    vessel?: Partial<VesselConfig>;
    batchHashFromMs?: number;
    flushTogetherBelowMs?: number;
  } = {},
) {
  const { proxy, knownHostsFile } = await proxyTo(server);
  const lines: string[] = [];
  const log: TransportLogger = {
    error: (line) => lines.push(line),
    warn: (line) => lines.push(line),
    info: (line) => lines.push(line),
    debug: () => {},
  };
  const vessel = server.vesselConfig({ ...options.vessel, port: proxy.port, knownHostsFile });
  const transport = new SftpTransport(vessel, {
    connections: options.connections ?? 1,
    log,
    batchHashFromMs: options.batchHashFromMs,
    flushTogetherBelowMs: options.flushTogetherBelowMs,
  });
  return {
    proxy,
    transport,
    vessel,
    lines,
    close: async () => {
      await transport.close();
      await proxy.close();
    },
  };
}
