/**
 * Files of many parts over SFTP: more than 10,000 parts already on the
 * vessel (a resume) assemble with one command whose length does not grow
 * with the part count; parts whose first comes last stream in batches.
 */
import { assembleAll } from "../transports/transport.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("many parts over SFTP", unavailable);

/** Bytes of each part: its index, padded. */
const PART_BYTES = 40;

/**
 * Runs `body` on a transport to a new sshd with `count` parts of `key`
 * already in its part directory, given the destination and the sha256 of
 * the parts in order.
 */
async function withPartsOnVessel(
  key: string,
  count: number,
  body: (transport: SftpTransport, destination: string, sha256: string) => Promise<void>,
): Promise<void> {
  const server = await startOpenSsh();
  const transport = new SftpTransport(server.vesselConfig());
  try {
    const destination = `${server.dir}/inbox/${key}.bin`;
    const hash = createHash("sha256");
    await transport.prepare(key, destination);
    // Parts written straight into the part directory (the vessel is this machine):
    // thousands of SFTP uploads would test the network, not the assembly.
    for (let index = 0; index < count; index++) {
      const data = new TextEncoder().encode(`part ${index} `.padEnd(PART_BYTES, "."));
      hash.update(data);
      await Deno.writeFile(`${server.vesselConfig().tempDir}/${key}/${index}.part`, data);
    }
    await body(transport, destination, hash.digest("hex"));
  } finally {
    await transport.close();
    await server.stop();
  }
}

Deno.test({
  name: "SftpTransport assembles 10,500 parts already on the vessel",
  ignore: unavailable !== undefined,
  fn: () =>
    withPartsOnVessel("huge", 10_500, async (transport, destination, expected) => {
      const assembled = await assembleAll(transport, "huge", 10_500, destination);
      assert.equal(assembled.sha256, expected);
      assert.equal(assembled.size, 10_500 * PART_BYTES);
      await transport.publish(assembled.tempPath, destination);
      const published = await Deno.readFile(destination);
      assert.equal(createHash("sha256").update(published).digest("hex"), expected);
      await transport.removeParts("huge");
    }),
});

Deno.test({
  name: "SftpTransport streams 1,200 parts whose first comes last, in batches",
  ignore: unavailable !== undefined,
  fn: () =>
    withPartsOnVessel("late", 1_200, async (transport, destination, expected) => {
      const assembly = transport.startAssembly("late", 1_200, destination);
      for (let index = 1; index < 1_200; index++) assembly.partReady(index);
      // The command is running by now, waiting for part 0; then all 1,200 are ready at once.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assembly.partReady(0);
      const assembled = await assembly.finish();
      assert.equal(assembled.sha256, expected);
      assert.equal(assembled.size, 1_200 * PART_BYTES);
      await transport.remove(assembled.tempPath);
      await transport.removeParts("late");
    }),
});
