/**
 * With Fsync = yes, a published file's directory is flushed after the rename
 * (fsync@openssh.com on a handle of the directory), seen by tracing the
 * vessel's sftp-server.
 */
import assert from "node:assert/strict";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";
import { STRACE, straceMissing } from "./strace.ts";

const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
const unavailable = serverUnavailable("openssh") ?? straceMissing;
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
      const assembled = await transport.putWhole("fsync1", destination, new Uint8Array(100), 0o644);
      await transport.publish(assembled.tempPath, destination);
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

Deno.test({
  name: "SftpTransport with Fsync flushes an assembled file on the vessel before it reports it",
  ignore: serverUnavailable("openssh") !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-fsync-" });
    // A `sync` first on the vessel's PATH that notes what it flushes, and the file's size then.
    const synced = `${dir}/synced`;
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/sync`,
      `#!/bin/sh\nfor f; do [ "$f" = -- ] || echo "$f $(wc -c < "$f")" >> ${synced}; done\n` +
        `exec /bin/sync "$@"\n`,
      { mode: 0o755 },
    );
    const server = await startOpenSsh({ sshdConfig: [`SetEnv PATH=${dir}/bin:/usr/bin:/bin`] });
    const transport = new SftpTransport(server.vesselConfig({ fsync: true }));
    try {
      const parts = [new Uint8Array(300_000).fill(1), new Uint8Array(200_000).fill(2)];
      const streamed = `${server.dir}/inbox/streamed.bin`;
      await transport.prepare("sync1", streamed);
      const assembly = transport.startAssembly("sync1", parts.length, streamed);
      for (const [index, data] of parts.entries()) {
        await transport.putPart("sync1", index, data);
        assembly.partReady(index);
      }
      const fromStream = await assembly.finish();
      // Every part there before the assembly starts: the other command.
      const whole = `${server.dir}/inbox/whole.bin`;
      await transport.prepare("sync2", whole);
      for (const [index, data] of parts.entries()) await transport.putPart("sync2", index, data);
      const all = transport.startAssembly("sync2", parts.length, whole);
      for (const index of parts.keys()) all.partReady(index);
      const fromParts = await all.finish();
      const lines = (await Deno.readTextFile(synced).catch(() => "")).trim().split("\n");
      for (const assembled of [fromStream, fromParts]) {
        assert.ok(
          lines.includes(`${assembled.tempPath} 500000`),
          `${assembled.tempPath} was not flushed whole before its report: ${JSON.stringify(lines)}`,
        );
      }
    } finally {
      await transport.close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
