/**
 * Host key checking against a real OpenSSH server, with StrictHostKeyChecking
 * as OpenSSH means it.
 */
import assert from "node:assert/strict";
import type { VesselConfig } from "../src/config/types.ts";
import { TransportError } from "../transports/transport.ts";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh, type TestServer } from "./servers.ts";
import { carrierUnavailable } from "./sftp_conformance.ts";

const unavailable = serverUnavailable("openssh") ?? carrierUnavailable("openssh");
if (unavailable) skipNotice("host keys", unavailable);

/** The SHA256 fingerprint ssh-keygen prints for a public key line. */
async function fingerprintOf(publicKey: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/key.pub`, `${publicKey}\n`);
    const output = await new Deno.Command("ssh-keygen", { args: ["-l", "-f", `${dir}/key.pub`] })
      .output();
    return new TextDecoder().decode(output.stdout).split(" ")[1];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Lists the vessel's TempDir through a fresh transport (connects, or throws). */
async function tryConnect(vessel: VesselConfig): Promise<void> {
  const transport = new SftpTransport(vessel, { connections: 1 });
  try {
    await transport.listParts("hostkey-test");
  } finally {
    await transport.close();
  }
}

async function hostKeyError(vessel: VesselConfig): Promise<TransportError> {
  try {
    await tryConnect(vessel);
  } catch (error) {
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.code, "host-key", error.message);
    assert.equal(error.retryable, false);
    return error;
  }
  assert.fail("the connection was accepted");
}

for (const carrier of ["openssh", "builtin"] as const) {
  // The builtin client words its refusals itself; OpenSSH's are ssh's own, relayed.
  const builtin = carrier === "builtin";
  Deno.test({
    name: `SFTP host keys follow StrictHostKeyChecking (${carrier} client)`,
    ignore: unavailable !== undefined,
    fn: async (t) => {
      let a: TestServer | undefined;
      let b: TestServer | undefined;
      try {
        a = await startOpenSsh();
        b = await startOpenSsh();
        const serverA = a;
        const printA = await fingerprintOf(serverA.hostPublicKey);
        const printB = await fingerprintOf(b.hostPublicKey);
        const keyType = serverA.hostPublicKey.split(" ")[0];
        const knownHosts = `${serverA.dir}/test_known_hosts`;
        const vessel = (policy: VesselConfig["strictHostKeyChecking"]) =>
          serverA.vesselConfig({
            name: "web1",
            knownHostsFile: knownHosts,
            strictHostKeyChecking: policy,
            sshClient: carrier,
          });

        await t.step(
          "yes refuses an unknown key and names vessel, host, type and fingerprint",
          async () => {
            await Deno.writeTextFile(knownHosts, "");
            const error = await hostKeyError(vessel("yes"));
            assert.match(error.message, /vessel "web1"/);
            assert.ok(error.message.includes(`127.0.0.1:${serverA.port}`), error.message);
            assert.ok(error.message.includes(keyType), error.message);
            assert.ok(error.message.includes(printA), error.message);
            if (builtin) assert.match(error.message, /accept-new/);
            assert.equal(await Deno.readTextFile(knownHosts), "", "yes must not record keys");
          },
        );

        await t.step("yes refuses a missing known_hosts file", async () => {
          await Deno.remove(knownHosts);
          await hostKeyError(vessel("yes"));
        });

        await t.step("accept-new records an unknown key in a new 0600 file", async () => {
          await tryConnect(vessel("accept-new"));
          const text = await Deno.readTextFile(knownHosts);
          assert.equal(text, `[127.0.0.1]:${serverA.port} ${serverA.hostPublicKey}\n`);
          assert.equal((await Deno.stat(knownHosts)).mode! & 0o777, 0o600);
          await tryConnect(vessel("yes"));
          await tryConnect(vessel("accept-new"));
          assert.equal(await Deno.readTextFile(knownHosts), text, "recorded once");
        });

        await t.step("accept-new and yes refuse a changed key like OpenSSH", async () => {
          // Server B's key recorded for server A's host and port: the key "changed".
          await Deno.writeTextFile(knownHosts, `[127.0.0.1]:${serverA.port} ${b!.hostPublicKey}\n`);
          for (const policy of ["accept-new", "yes"] as const) {
            const error = await hostKeyError(vessel(policy));
            assert.match(error.message, /HAS CHANGED/);
            assert.ok(error.message.includes(printA), error.message);
            assert.ok(!error.message.includes(printB), "names the offered key, not the old one");
            assert.match(error.message, /line 1 of|known_hosts:1/);
            if (builtin) assert.match(error.message, /ssh-keygen -R/);
          }
          assert.equal(
            await Deno.readTextFile(knownHosts),
            `[127.0.0.1]:${serverA.port} ${b!.hostPublicKey}\n`,
            "a changed key is never overwritten",
          );
        });

        await t.step("no accepts a changed key", async () => {
          await tryConnect(vessel("no"));
        });

        await t.step("hashed entries (ssh-keygen -H) are matched", async () => {
          await Deno.writeTextFile(
            knownHosts,
            `[127.0.0.1]:${serverA.port} ${serverA.hostPublicKey}\n`,
          );
          const hashed = await new Deno.Command("ssh-keygen", { args: ["-H", "-f", knownHosts] })
            .output();
          assert.equal(hashed.code, 0);
          assert.match(await Deno.readTextFile(knownHosts), /^\|1\|/);
          await tryConnect(vessel("yes"));
        });

        await t.step("a @revoked key is refused even with StrictHostKeyChecking no", async () => {
          await Deno.writeTextFile(
            knownHosts,
            `@revoked * ${serverA.hostPublicKey}\n[127.0.0.1]:${serverA.port} ${serverA.hostPublicKey}\n`,
          );
          const error = await hostKeyError(vessel("no"));
          assert.match(error.message, builtin ? /@revoked on line 1/ : /revoked/i);
        });

        await t.step("a known key of another type is preferred in negotiation", async () => {
          // Server B also offers an RSA key once it has one; list only that one.
          const rsa = `${b!.dir}/ssh_host_rsa_key`;
          await new Deno.Command("ssh-keygen", {
            args: ["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "", "-f", rsa],
          }).output();
          const config = await Deno.readTextFile(`${b!.dir}/sshd_config`);
          await Deno.writeTextFile(`${b!.dir}/sshd_config`, `${config}HostKey ${rsa}\n`);
          await b!.signal("SIGHUP"); // sshd re-executes itself with the new config
          const rsaPublic = (await Deno.readTextFile(`${rsa}.pub`)).trim();
          const rsaKnownHosts = `${b!.dir}/rsa_known_hosts`;
          await Deno.writeTextFile(rsaKnownHosts, `[127.0.0.1]:${b!.port} ${rsaPublic}\n`);
          const rsaVessel = b!.vesselConfig({ knownHostsFile: rsaKnownHosts, sshClient: carrier });
          const deadline = Date.now() + 10_000;
          for (;;) {
            try {
              await tryConnect(rsaVessel);
              break;
            } catch (error) {
              // Until sshd has reloaded, it may refuse connections or offer only ed25519.
              if (Date.now() > deadline) throw error;
              await new Promise((resolve) => setTimeout(resolve, 200));
            }
          }
        });
      } finally {
        await a?.stop();
        await b?.stop();
      }
    },
  });
}
