/** Runs the transport conformance suite against one kind of real SSH server. */
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

/** Registers the conformance suite for the SFTP transport against `kind`. */
export function sftpConformance(kind: ServerKind, label: string): void {
  const unavailable = serverUnavailable(kind);
  if (unavailable) skipNotice(`${label} conformance`, unavailable);
  transportConformance(`sftp (${label})`, async () => {
    const server = kind === "openssh" ? await startOpenSsh() : await startDropbear();
    const base = `${server.dir}/vessel`;
    await Deno.mkdir(base);
    const vessel = server.vesselConfig();
    return {
      transport: new SftpTransport(vessel),
      base,
      tempDir: vessel.tempDir,
      read: readLocal,
      list: listLocal,
      cleanup: () => server.stop(),
    };
  }, { ignore: unavailable !== undefined });
}
