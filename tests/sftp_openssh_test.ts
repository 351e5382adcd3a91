import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { transportConformance } from "./conformance.ts";
import { listLocal, readLocal, serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("OpenSSH conformance", unavailable);

transportConformance("sftp (OpenSSH)", async () => {
  const server = await startOpenSsh();
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
