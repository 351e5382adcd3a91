import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { transportConformance } from "./conformance.ts";
import { listLocal, readLocal, serverUnavailable, skipNotice, startDropbear } from "./servers.ts";

const unavailable = serverUnavailable("dropbear");
if (unavailable) skipNotice("Dropbear conformance", unavailable);

transportConformance("sftp (Dropbear)", async () => {
  const server = await startDropbear();
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
