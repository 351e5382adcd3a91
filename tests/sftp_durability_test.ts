/**
 * With Fsync = yes, a published file's directory is flushed after the rename
 * (fsync@openssh.com on a handle of the directory), seen by tracing the
 * vessel's sftp-server.
 */
import assert from "node:assert/strict";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";

const STRACE = "/usr/bin/strace";
const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
const unavailable = serverUnavailable("openssh") ??
  (await Deno.stat(STRACE).then(() => undefined, () => `${STRACE} is missing`));
if (unavailable) skipNotice("directory fsync over SFTP", unavailable);

Deno.test({
  name: "SftpTransport.publish() with Fsync fsyncs the destination directory after the rename",
  ignore: unavailable !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-fsync-" });
    const trace = `${dir}/sftp.trace`;
    const wrapper = `${dir}/sftp-server`;
    await Deno.writeTextFile(
      wrapper,
      // One trace per sftp-server (the transport opens several connections).
      `#!/bin/sh\nexec ${STRACE} -f -qq -e trace=openat,rename,renameat,renameat2,fsync ` +
        `-o ${trace}.$$ ${SFTP_SERVER} "$@"\n`,
      { mode: 0o755 },
    );
    const server = await startOpenSsh({ sftpServer: wrapper });
    const transport = new SftpTransport(server.vesselConfig({ fsync: true }));
    try {
      const destination = `${server.dir}/inbox/durable.bin`;
      const assembled = await transport.putWhole("fsync1", destination, new Uint8Array(100));
      await transport.publish(assembled.tempPath, destination, 0o644);
      await transport.close();
      // The directory's fsync must be on the connection (sftp-server) that renamed the file.
      let lines: string[] = [];
      for await (const entry of Deno.readDir(dir)) {
        if (!entry.name.startsWith("sftp.trace.")) continue;
        const traced = (await Deno.readTextFile(`${dir}/${entry.name}`)).split("\n");
        if (traced.some((line) => /rename.*durable\.bin/.test(line))) lines = traced;
      }
      const rename = lines.findIndex((line) => /rename.*durable\.bin/.test(line));
      assert.ok(rename >= 0, "no rename traced");
      // The directory may be opened before the rename (requests are pipelined); its fsync
      // must come after.
      const open = lines.findLastIndex((line, i) =>
        i < rename + 3 && line.includes(`"${server.dir}/inbox", O_RDONLY`)
      );
      assert.ok(open >= 0, `the directory was never opened:\n${lines.join("\n")}`);
      const fd = /= (\d+)$/.exec(lines[open])?.[1];
      assert.ok(
        lines.slice(rename).some((line) => line.includes(`fsync(${fd})`) && /= 0$/.test(line)),
        `no fsync of the directory's descriptor ${fd} after the rename:\n${lines.join("\n")}`,
      );
    } finally {
      await transport.close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
