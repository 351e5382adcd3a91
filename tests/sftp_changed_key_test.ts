/**
 * StrictHostKeyChecking = no with a CHANGED host key: as OpenSSH, the
 * connection may go on, but no password is sent to a host that may be a
 * man in the middle (builtin ssh2 client; the OpenSSH client does this itself).
 */
import assert from "node:assert/strict";
import { Secret } from "../src/config/secret.ts";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { TransportError } from "../transports/transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("changed host keys", unavailable);

Deno.test({
  name: "a changed host key accepted by StrictHostKeyChecking = no gets no password",
  ignore: unavailable !== undefined,
  fn: async () => {
    const password = "changed-key-s3cret-5150";
    const server = await startOpenSsh({ rootPassword: password });
    const home = await Deno.makeTempDir({ prefix: "cm-home-" });
    try {
      const base = {
        identityFile: undefined,
        password: new Secret(password),
        sshClient: "builtin" as const,
      };
      const listParts = async (vessel: ReturnType<typeof server.vesselConfig>) => {
        const transport = new SftpTransport(vessel, { authEnvironment: { home } });
        try {
          return await transport.listParts("changed");
        } finally {
          await transport.close();
        }
      };
      // The password works while the key is the known one.
      assert.deepEqual([...await listParts(server.vesselConfig(base))], []);

      const [type] = server.hostPublicKey.split(" ");
      const other = (await Deno.readTextFile(server.knownHostsFile)).split(" ")[0];
      const changed = `${home}/known_hosts`;
      // Same host, same key type, another key: what a man in the middle would show.
      await Deno.writeTextFile(
        changed,
        `${other} ${type} AAAAC3NzaC1lZDI1NTE5AAAAIHkXiWZ8iIMl9zKhgGG9wKUjq3jCsYQLFLKZUqXeKHjb\n`,
      );
      const vessel = server.vesselConfig({
        ...base,
        knownHostsFile: changed,
        strictHostKeyChecking: "no",
      });
      await assert.rejects(() => listParts(vessel), (error: unknown) => {
        assert.ok(error instanceof TransportError, String(error));
        assert.equal(error.code, "auth", error.message);
        assert.ok(!error.message.includes(password));
        return true;
      });
    } finally {
      await server.stop();
      await Deno.remove(home, { recursive: true });
    }
  },
});
