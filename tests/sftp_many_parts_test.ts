/**
 * A file of more than 10,000 parts assembles over SFTP when every part is
 * already on the vessel (a resume): one command whose length does not grow
 * with the part count (the streamed command reads indices on stdin anyway).
 */
import { assembleAll } from "../transports/transport.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("many parts over SFTP", unavailable);

const PARTS = 10_500;

Deno.test({
  name: "SftpTransport assembles 10,500 parts already on the vessel",
  ignore: unavailable !== undefined,
  fn: async () => {
    const server = await startOpenSsh();
    const transport = new SftpTransport(server.vesselConfig());
    try {
      const vessel = server.vesselConfig();
      const destination = `${server.dir}/inbox/huge.bin`;
      const hash = createHash("sha256");
      await transport.prepare("huge", destination);
      // Parts written straight into the part directory (the vessel is this machine):
      // 10,500 SFTP uploads would test the network, not the assembly.
      for (let index = 0; index < PARTS; index++) {
        const data = new TextEncoder().encode(`part ${index} `.padEnd(40, "."));
        hash.update(data);
        await Deno.writeFile(`${vessel.tempDir}/huge/${index}.part`, data);
      }
      const expected = hash.digest("hex");
      const assembled = await assembleAll(transport, "huge", PARTS, destination);
      assert.equal(assembled.sha256, expected);
      assert.equal(assembled.size, PARTS * 40);
      await transport.publish(assembled.tempPath, destination);
      const published = await Deno.readFile(destination);
      assert.equal(createHash("sha256").update(published).digest("hex"), expected);
      await transport.removeParts("huge");
    } finally {
      await transport.close();
      await server.stop();
    }
  },
});

Deno.test({
  name: "SftpTransport streams 1,200 parts whose first comes last, in batches",
  ignore: unavailable !== undefined,
  fn: async () => {
    const server = await startOpenSsh();
    const transport = new SftpTransport(server.vesselConfig());
    try {
      const vessel = server.vesselConfig();
      const destination = `${server.dir}/inbox/late.bin`;
      const count = 1_200;
      const parts = Array.from(
        { length: count },
        (_, index) => new TextEncoder().encode(`part ${index} `.padEnd(40, ".")),
      );
      await transport.prepare("late", destination);
      for (const [index, data] of parts.entries()) {
        await Deno.writeFile(`${vessel.tempDir}/late/${index}.part`, data);
      }
      const assembly = transport.startAssembly("late", count, destination);
      for (let index = 1; index < count; index++) assembly.partReady(index);
      // The command is running by now, waiting for part 0; then all 1,200 are ready at once.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assembly.partReady(0);
      const assembled = await assembly.finish();
      const expected = createHash("sha256");
      for (const data of parts) expected.update(data);
      assert.equal(assembled.sha256, expected.digest("hex"));
      assert.equal(assembled.size, count * 40);
      await transport.remove(assembled.tempPath);
      await transport.removeParts("late");
    } finally {
      await transport.close();
      await server.stop();
    }
  },
});
