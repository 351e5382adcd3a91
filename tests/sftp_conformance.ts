/** Runs the transport conformance suite against one kind of real SSH server. */
import { findSsh } from "../transports/sftp/openssh_setup.ts";
import type { SshClientKind } from "../transports/sftp/options.ts";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { transportConformance } from "./conformance.ts";
import {
  listLocal,
  readLocal,
  type ServerKind,
  serverUnavailable,
  skipNotice,
  startDropbear,
  startOpenSsh,
} from "./servers.ts";

/** Registers the conformance suite for the SFTP transport over `carrier` against `kind`. */
export function sftpConformance(kind: ServerKind, label: string, carrier: SshClientKind): void {
  const unavailable = serverUnavailable(kind) ?? carrierUnavailable(carrier);
  if (unavailable) skipNotice(`${label} conformance over ${carrier}`, unavailable);
  transportConformance(`sftp (${label}, ${carrier} client)`, async () => {
    const server = kind === "openssh" ? await startOpenSsh() : await startDropbear();
    const base = `${server.dir}/vessel`;
    await Deno.mkdir(base);
    const vessel = server.vesselConfig({ sshClient: carrier });
    return {
      transport: new SftpTransport(vessel),
      base,
      tempDir: vessel.tempDir,
      read: readLocal,
      list: listLocal,
      localPath: (path) => path,
      withTempDir: (tempDir) => new SftpTransport({ ...vessel, tempDir }),
      cleanup: () => server.stop(),
    };
  }, { ignore: unavailable !== undefined });
}

/** Why the SSH client `carrier` cannot run here, or `undefined` if it can. */
export function carrierUnavailable(carrier: SshClientKind): string | undefined {
  if (carrier === "openssh" && !findSsh()) return "no ssh binary on PATH (install openssh-client)";
  return undefined;
}
