/**
 * The OpenSSH carrier against a real sshd: passwords through SSH_ASKPASS
 * (never on a command line, in an environment or left on disk), ssh's own
 * failures coded for the engine, ssh_config aliases, and the ssh2 internals
 * it relies on.
 */
import assert from "node:assert/strict";
import { fileSha256, pathExists, waitFor } from "../../tests/cli_harness.ts";
import { proxiedTransport } from "../../tests/proxied_transport.ts";
import {
  serverUnavailable,
  skipNotice,
  startDropbear,
  startOpenSsh,
  type TestServer,
} from "../../tests/servers.ts";
import { silentLogger, TransportError } from "../transport.ts";
import { sftpInternalsPresent } from "./_sftp_pipe.ts";
import type { SshConnection } from "./connection.ts";
import { openOpenSsh, spawnInOwnSession } from "./openssh_link.ts";
import { findSsh, prepareOpenSsh } from "./openssh_setup.ts";
import type { SecretValue, SftpVessel } from "./options.ts";
import { SftpTransport } from "./sftp_transport.ts";

const unavailable = serverUnavailable("openssh") ??
  (findSsh() ? undefined : "no ssh binary on PATH (install openssh-client)");
if (unavailable) skipNotice("OpenSSH carrier", unavailable);
const ignore = unavailable !== undefined;

function secret(value: string): SecretValue {
  return { reveal: () => value };
}

async function withServer(
  options: Parameters<typeof startOpenSsh>[0],
  fn: (server: TestServer) => Promise<void>,
  start = startOpenSsh,
): Promise<void> {
  const server = await start(options);
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

async function rejection(promise: Promise<unknown>): Promise<TransportError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof TransportError, `expected a TransportError, got ${error}`);
    return error;
  }
  assert.fail("expected a rejection");
}

/** Writes `lines` as an ssh_config in the server's directory; returns its path. */
async function writeSshConfig(server: TestServer, lines: string[]): Promise<string> {
  const path = `${server.dir}/ssh_config`;
  await Deno.writeTextFile(path, [...lines, ""].join("\n"));
  return path;
}

function openssh(server: TestServer, overrides: Partial<SftpVessel> = {}): SftpVessel {
  return { ...server.vesselConfig({ sshClient: "openssh" }), ...overrides };
}

/** Runs `fn` with one OpenSSH connection to `server` and its control socket's path. */
async function withConnection(
  server: TestServer,
  fn: (connection: SshConnection, controlPath: string) => Promise<void>,
): Promise<void> {
  const vessel = openssh(server);
  const setup = await prepareOpenSsh(vessel, findSsh()!);
  const controlPath = `${setup.dir}/c0`;
  const connection = await openOpenSsh({ vessel, log: silentLogger, setup, controlPath });
  try {
    await fn(connection, controlPath);
  } finally {
    await connection.close();
    await Deno.remove(setup.dir, { recursive: true });
  }
}

/** Every command line and environment of this machine's processes, as text. */
async function processTexts(): Promise<string[]> {
  const texts: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    for (const file of ["cmdline", "environ"]) {
      try {
        texts.push(await Deno.readTextFile(`/proc/${entry.name}/${file}`));
      } catch {
        // Exited, or a kernel thread.
      }
    }
  }
  return texts;
}

Deno.test("the ssh2 internals the OpenSSH carrier runs SFTP through are where it expects them", () => {
  // If this fails after an ssh2 upgrade, _sftp_pipe.ts must be checked against the new SFTP.js.
  assert.deepEqual(sftpInternalsPresent(), []);
  const config = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
  assert.equal(config.imports["ssh2/"], "npm:/ssh2@1.17.0/", "ssh2 must stay pinned");
  assert.equal(config.imports.ssh2, "npm:ssh2@1.17.0", "ssh2 must stay pinned");
});

Deno.test({
  name: "OpenSSH carrier logs in with a password through SSH_ASKPASS, never exposing it",
  ignore,
  fn: () =>
    withServer({ rootPassword: "askpass-s3cret-919" }, async (server) => {
      const vessel = openssh(server, {
        identityFile: undefined,
        password: secret("askpass-s3cret-919"),
      });
      // No agent, no default keys: only the password can work.
      const env = { HOME: server.dir };
      const saved = Deno.env.get("SSH_AUTH_SOCK");
      const savedHome = Deno.env.get("HOME");
      Deno.env.delete("SSH_AUTH_SOCK");
      Deno.env.set("HOME", env.HOME);
      const transport = new SftpTransport(vessel, { connections: 1 });
      let sawSecret = false;
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          if ((await processTexts()).some((text) => text.includes("askpass-s3cret-919"))) {
            sawSecret = true;
          }
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();
      try {
        const items = await transport.probe(["/tmp"]);
        const auth = items.find((item) => item.check === "auth");
        assert.ok(auth?.ok, JSON.stringify(items));
        assert.match(auth.detail, /password/);
        assert.deepEqual(await transport.listParts("k"), new Set());
        // The secret file exists only during the login.
        const leftovers: string[] = [];
        for await (const entry of Deno.readDir("/tmp")) {
          if (!entry.name.startsWith(`contentmonster-ssh-${Deno.pid}-`)) continue;
          for await (const file of Deno.readDir(`/tmp/${entry.name}`)) leftovers.push(file.name);
        }
        assert.ok(!leftovers.some((name) => name.endsWith("password")), `left: ${leftovers}`);
      } finally {
        watching = false;
        await watcher;
        await transport.close();
        if (saved !== undefined) Deno.env.set("SSH_AUTH_SOCK", saved);
        if (savedHome !== undefined) Deno.env.set("HOME", savedHome);
      }
      assert.equal(sawSecret, false, "the password showed in a command line or environment");

      const wrong = new SftpTransport(
        { ...vessel, password: secret("wrong-guess-4411") },
        { connections: 1 },
      );
      try {
        const error = await rejection(wrong.listParts("k"));
        assert.equal(error.code, "auth");
        assert.equal(error.retryable, false);
        assert.match(error.message, /Permission denied/);
        assert.ok(!error.message.includes("wrong-guess-4411"));
      } finally {
        await wrong.close();
      }
    }),
});

/** Runs `fn` with no agent and HOME in the server's directory: only a Password can work. */
async function withoutKeys(server: TestServer, fn: () => Promise<void>): Promise<void> {
  const saved = Deno.env.get("SSH_AUTH_SOCK");
  const savedHome = Deno.env.get("HOME");
  Deno.env.delete("SSH_AUTH_SOCK");
  Deno.env.set("HOME", server.dir);
  try {
    await fn();
  } finally {
    if (saved !== undefined) Deno.env.set("SSH_AUTH_SOCK", saved);
    if (savedHome !== undefined) Deno.env.set("HOME", savedHome);
  }
}

Deno.test({
  name: "OpenSSH carrier: logins with a password that start together each get it",
  ignore,
  fn: () =>
    withServer({ rootPassword: "together-s3cret-27" }, (server) =>
      withoutKeys(server, async () => {
        const vessel = openssh(server, {
          identityFile: undefined,
          password: secret("together-s3cret-27"),
        });
        const setup = await prepareOpenSsh(vessel, findSsh()!);
        // They used to share one file: made by the first, refused to the others (EEXIST), or
        // removed under them once the first had logged in.
        const logins = await Promise.allSettled(
          Array.from(
            { length: 4 },
            (_, i) =>
              openOpenSsh({ vessel, log: silentLogger, setup, controlPath: `${setup.dir}/c${i}` }),
          ),
        );
        try {
          const failed = logins.flatMap((login) =>
            login.status === "rejected" ? [String(login.reason)] : []
          );
          assert.deepEqual(failed, []);
        } finally {
          for (const login of logins) {
            if (login.status === "fulfilled") await login.value.close();
          }
          await setup.dispose();
        }
      })),
});

Deno.test({
  name: "OpenSSH carrier writes no secret into a private directory someone else made again",
  ignore,
  fn: () =>
    withServer({ rootPassword: "planted-s3cret-61" }, (server) =>
      withoutKeys(server, async () => {
        const vessel = openssh(server, {
          identityFile: undefined,
          password: secret("planted-s3cret-61"),
        });
        const setup = await prepareOpenSsh(vessel, findSsh()!);
        const stolen = `${server.dir}/stolen`;
        try {
          // A cleaner empties /tmp; another user makes the directory again, with a helper.
          await Deno.remove(setup.dir, { recursive: true });
          const planted = await new Deno.Command("setpriv", {
            args: [
              "--reuid=65534",
              "--regid=65534",
              "--clear-groups",
              "sh",
              "-c",
              'mkdir -m 0777 "$1" && printf \'#!/bin/sh\\ncat "$CONTENTMONSTER_SECRETS".* ' +
              '"$(dirname "$0")"/* >> "$2"\\n\' > "$1/askpass" && chmod 0777 "$1/askpass"',
              "sh",
              setup.dir,
              stolen,
            ],
          }).output();
          assert.equal(planted.code, 0, new TextDecoder().decode(planted.stderr));
          await Deno.writeTextFile(stolen, "", { mode: 0o666 });
          await assert.rejects(
            openOpenSsh({ vessel, log: silentLogger, setup, controlPath: `${setup.dir}/c0` }),
            /not a directory of this user/,
          );
          assert.equal(await Deno.readTextFile(stolen), "", "the planted helper ran");
          const names = await Array.fromAsync(Deno.readDir(setup.dir));
          assert.deepEqual(names.map((entry) => entry.name), ["askpass"], "a secret was written");
        } finally {
          await setup.dispose();
        }
      })),
});

Deno.test({
  name: "OpenSSH carrier's helper gives the passphrase only to ssh's own prompt for a key",
  ignore,
  fn: () =>
    withServer({}, async (server) => {
      const vessel = openssh(server, {
        password: secret("the-password"),
        passphrase: secret("the-passphrase"),
      });
      const setup = await prepareOpenSsh(vessel, findSsh()!);
      const exposed = await setup.exposeSecrets();
      const ask = async (prompt: string, env = exposed.env) => {
        const output = await new Deno.Command(`${setup.dir}/askpass`, {
          args: [prompt],
          env,
        }).output();
        return output.code === 0 ? new TextDecoder().decode(output.stdout) : undefined;
      };
      try {
        assert.equal(
          await ask("Enter passphrase for key '/etc/cm/id_ed25519': "),
          "the-passphrase",
        );
        assert.equal(await ask("root@vessel's password: "), "the-password");
        // Keyboard-interactive prompts are the vessel's words, after "(user@host) ".
        assert.equal(await ask("(root@vessel) Password: "), "the-password");
        assert.equal(await ask("(root@vessel) Enter passphrase: "), undefined);
        assert.equal(await ask("(root@vessel) Enter passphrase for key '/x': "), undefined);
        assert.equal(await ask("Are you sure you want to continue connecting?"), undefined);
        // Through a jump host, only prompts that name the vessel's login get the password.
        const login = exposed.env.CONTENTMONSTER_LOGIN;
        assert.equal(login, `root@${server.host}`);
        const proxied = { ...exposed.env, CONTENTMONSTER_PROXIED: "1" };
        assert.equal(await ask(`${login}'s password: `, proxied), "the-password");
        assert.equal(await ask(`(${login}) Password: `, proxied), "the-password");
        assert.equal(await ask("root@jumphost's password: ", proxied), undefined);
        assert.equal(await ask("(root@jumphost) Password: ", proxied), undefined);
        assert.equal(await ask("Password: ", proxied), undefined);
        assert.equal(await ask("Enter passphrase for key '/x': ", proxied), "the-passphrase");
      } finally {
        await exposed.hide();
        await setup.dispose();
      }
    }),
});

/**
 * Runs `fn` with a vessel reached through a jump host (ssh_config `ProxyJump`), both real
 * sshd: `jumpLines` say how ssh logs in to the jump host, which is `root@jumphost` to ssh.
 */
async function withJumpHost(
  servers: { jump: Parameters<typeof startOpenSsh>[0]; vessel: Parameters<typeof startOpenSsh>[0] },
  jumpLines: (jump: TestServer) => string[],
  fn: (vessel: SftpVessel, server: TestServer) => Promise<void>,
): Promise<void> {
  await withServer(servers.jump, (jump) =>
    withServer(servers.vessel, async (server) => {
      const knownHosts = `${server.dir}/jump_known_hosts`;
      await Deno.writeTextFile(
        knownHosts,
        `jumphost ${jump.hostPublicKey}\n[127.0.0.1]:${server.port} ${server.hostPublicKey}\n`,
      );
      const config = await writeSshConfig(server, [
        "Host jump",
        "  HostName 127.0.0.1",
        `  Port ${jump.port}`,
        "  User root",
        "  HostKeyAlias jumphost",
        `  UserKnownHostsFile ${knownHosts}`,
        ...jumpLines(jump).map((line) => `  ${line}`),
        "Host vessel",
        "  HostName 127.0.0.1",
        "  ProxyJump jump",
      ]);
      await fn(
        openssh(server, { address: "vessel", knownHostsFile: knownHosts, sshConfigFile: config }),
        server,
      );
    }));
}

/** The SHA256 fingerprint `ssh-keygen -l` gives a server's host key. */
async function hostKeyFingerprint(server: TestServer): Promise<string> {
  const output = await new Deno.Command("ssh-keygen", {
    args: ["-l", "-f", `${server.dir}/ssh_host_ed25519_key.pub`],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(output.stdout).split(" ")[1];
}

Deno.test({
  name: "OpenSSH carrier names the vessel's host key behind a ProxyJump host, not the jump host's",
  ignore,
  fn: () =>
    withJumpHost(
      { jump: {}, vessel: {} },
      (jump) => [`IdentityFile ${jump.identityFile}`, "IdentitiesOnly yes"],
      async (vessel, server) => {
        const setup = await prepareOpenSsh(vessel, findSsh()!);
        try {
          const connection = await openOpenSsh({
            vessel,
            log: silentLogger,
            setup,
            controlPath: `${setup.dir}/c0`,
          });
          try {
            // `contentmonster check` shows this: an operator compares it with the vessel's.
            const expected = await hostKeyFingerprint(server);
            assert.ok(
              connection.info.hostKey.includes(expected),
              `${connection.info.hostKey} is not the vessel's key ${expected}`,
            );
          } finally {
            await connection.close();
          }
        } finally {
          await setup.dispose();
        }
      },
    ),
});

Deno.test({
  name: "OpenSSH carrier gives the vessel's password to no ProxyJump host",
  ignore,
  fn: () =>
    // The jump host would take the vessel's password: it logs in only if it is given it.
    withJumpHost(
      { jump: { rootPassword: "jump-s3cret-58" }, vessel: {} },
      () => ["PubkeyAuthentication no"],
      async (vessel) => {
        const withPassword = { ...vessel, password: secret("jump-s3cret-58") };
        const setup = await prepareOpenSsh(withPassword, findSsh()!);
        try {
          const login = openOpenSsh({
            vessel: withPassword,
            log: silentLogger,
            setup,
            controlPath: `${setup.dir}/c0`,
          });
          const connection = await login.catch((error: Error) => error);
          if (!(connection instanceof Error)) {
            await connection.close();
            assert.fail("logged in through the jump host: it was given the vessel's password");
          }
          // The vessel takes the key: only the jump host refuses, asked as root@jumphost.
          assert.match(connection.message, /Permission denied/);
        } finally {
          await setup.dispose();
        }
      },
    ),
});

Deno.test({
  name: "OpenSSH carrier logs in with a password behind a ProxyJump host that took a key",
  ignore,
  fn: () =>
    withJumpHost(
      { jump: {}, vessel: { rootPassword: "behind-s3cret-73" } },
      (jump) => [`IdentityFile ${jump.identityFile}`, "IdentitiesOnly yes"],
      (vessel, server) =>
        withoutKeys(server, async () => {
          // The jump host's ssh says "Authenticated to" first: the secrets were removed then,
          // before the vessel asked for the password.
          const withPassword = {
            ...vessel,
            identityFile: undefined,
            password: secret("behind-s3cret-73"),
          };
          const setup = await prepareOpenSsh(withPassword, findSsh()!);
          let authenticated = 0;
          try {
            const connection = await openOpenSsh({
              vessel: withPassword,
              log: silentLogger,
              setup,
              controlPath: `${setup.dir}/c0`,
              onAuthenticated: () => authenticated++,
            });
            try {
              assert.equal(connection.info.auth, "password");
              assert.equal(authenticated, 1);
              assert.deepEqual(
                await connection.exec("echo hi", 10_000).then((r) => r.stdout),
                "hi\n",
              );
            } finally {
              await connection.close();
            }
            const names = await Array.fromAsync(Deno.readDir(setup.dir), (entry) => entry.name);
            assert.ok(!names.some((name) => name.startsWith("login")), `left: ${names}`);
          } finally {
            await setup.dispose();
          }
        }),
    ),
});

Deno.test({
  name: "OpenSSH carrier refuses an unknown host key with its fingerprint, code host-key",
  ignore,
  fn: () =>
    withServer({}, async (server) => {
      const empty = `${server.dir}/empty_known_hosts`;
      await Deno.writeTextFile(empty, "");
      const transport = new SftpTransport(openssh(server, { knownHostsFile: empty }));
      try {
        const error = await rejection(transport.listParts("k"));
        assert.equal(error.code, "host-key");
        assert.equal(error.retryable, false);
        const fingerprint = await hostKeyFingerprint(server);
        assert.ok(error.message.includes(fingerprint), `${fingerprint} in: ${error.message}`);
        assert.match(error.message, /StrictHostKeyChecking yes/);
      } finally {
        await transport.close();
      }
    }),
});

Deno.test({
  name: "OpenSSH carrier takes what settings.ini leaves out from ssh_config (a Host alias)",
  ignore,
  fn: () =>
    withServer({}, async (server) => {
      const sshConfig = await writeSshConfig(server, [
        "Host shipyard-alias",
        "  HostName 127.0.0.1",
        `  Port ${server.port}`,
        "  User root",
        `  UserKnownHostsFile ${server.knownHostsFile}`,
      ]);
      const transport = new SftpTransport(openssh(server, {
        address: "shipyard-alias",
        port: 22,
        username: "nobody-from-settings",
        sshConfigFile: sshConfig,
        defaulted: ["port", "username", "knownHostsFile", "strictHostKeyChecking"],
      }));
      try {
        const items = await transport.probe(["/tmp"]);
        assert.ok(items.every((item) => item.ok), JSON.stringify(items, null, 1));
        const connect = items.find((item) => item.check === "connect");
        assert.ok(connect?.detail.startsWith(`root@127.0.0.1:${server.port}`), connect?.detail);
        assert.match(items[0].detail, new RegExp(`openssh .*ssh_config: ${sshConfig}`));
      } finally {
        await transport.close();
      }
    }),
});

Deno.test({
  name: "OpenSSH carrier works for a Host whose ssh_config closes stdin or forks after login",
  ignore,
  fn: () =>
    withServer({}, async (server) => {
      // Fine for a tunnel host (`ssh -fN`), fatal to SFTP over ssh's pipes.
      const sshConfig = await writeSshConfig(server, [
        "Host *",
        "  StdinNull yes",
        "  ForkAfterAuthentication yes",
        "  SessionType none",
      ]);
      const transport = new SftpTransport(
        openssh(server, { sshConfigFile: sshConfig, timeout: 2 }),
      );
      try {
        const data = new TextEncoder().encode("through a tunnel host's settings");
        const { sha256 } = await transport.putWhole("k", `${server.dir}/out/f.txt`, data);
        assert.equal(sha256, await fileSha256(`${server.dir}/out/.contentmonster-k.tmp`));
        // Hashed by a command on the vessel, run over the control socket.
        const large = `${server.dir}/out/large.bin`;
        await Deno.writeFile(large, new Uint8Array(600 << 10).fill(7));
        assert.equal(await transport.hash(large), await fileSha256(large));
      } finally {
        await transport.close();
      }
    }),
});

Deno.test({
  name: "OpenSSH carrier codes a refused connection and a missing SFTP subsystem",
  ignore,
  fn: async () => {
    await withServer({ sftpServer: false }, async (server) => {
      const transport = new SftpTransport(openssh(server));
      try {
        const error = await rejection(transport.listParts("k"));
        assert.equal(error.code, "unsupported");
        assert.match(error.message, /no SFTP subsystem/);
      } finally {
        await transport.close();
      }
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      listener.close();
      const refused = new SftpTransport(openssh(server, { port }));
      try {
        const error = await rejection(refused.listParts("k"));
        assert.equal(error.code, "connection");
        assert.equal(error.retryable, true);
        assert.match(error.message, /Connection refused/);
      } finally {
        await refused.close();
      }
    });
  },
});

Deno.test({
  name: "OpenSSH carrier codes a link that stalls after login, before SFTP starts, as lost",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-stalled-session-" });
    const started = `${dir}/started`;
    // The SFTP server says when sshd starts it, and takes long enough for the stall to count.
    const wrapper = `${dir}/sftp-server`;
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/sh\ntouch ${started}\nsleep 10\nexec /usr/lib/openssh/sftp-server "$@"\n`,
      { mode: 0o755 },
    );
    try {
      await withServer({ sftpServer: wrapper }, async (server) => {
        const link = await proxiedTransport(server, {
          vessel: { sshClient: "openssh", timeout: 3 },
        });
        try {
          const listing = rejection(link.transport.listParts("k"));
          await waitFor(() => pathExists(started), 15_000, "the SFTP server started");
          link.proxy.stall();
          // The login's own limit (3 x Timeout) ends it: the link broke, and a retry may work.
          // Taken for a vessel without SFTP, it waited for the operator (10 minutes).
          const error = await listing;
          assert.equal(error.code, "connection", error.message);
          assert.match(error.message, /no SFTP session within 9 s/);
        } finally {
          link.proxy.resume();
          await link.close();
        }
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "OpenSSH carrier: a command whose master is gone fails; ssh never logs in by itself",
  ignore,
  fn: () =>
    withServer({}, (server) =>
      withConnection(server, async (connection, controlPath) => {
        // What a master that died leaves: no control socket.
        await Deno.remove(controlPath);
        const marker = `${server.dir}/ran`;
        const error = await rejection(connection.exec(`touch ${marker}`, 15_000));
        assert.equal(error.code, "connection", error.message);
        assert.match(error.message, /control socket .* is gone/);
        assert.equal(await pathExists(marker), false, "ssh logged in by itself and ran it");
      })),
});

/** The command name, session and controlling terminal of process `pid`, from /proc. */
async function sessionOf(pid: number): Promise<{ comm: string; session: number; tty: number }> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
  // After "(comm)": state ppid pgrp session tty_nr ...
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { comm, session: Number(fields[3]), tty: Number(fields[4]) };
}

/** The `ssh` processes of this machine: PID, parent PID and command line. */
async function sshProcesses(): Promise<{ pid: number; ppid: number; words: string[] }[]> {
  const found = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const words = (await Deno.readTextFile(`/proc/${entry.name}/cmdline`)).split("\0");
      if (!words[0].endsWith("/ssh")) continue;
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      found.push({ pid: Number(entry.name), ppid, words });
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}

/** The `ssh` children of this process. */
async function sshChildren(): Promise<number[]> {
  return (await sshProcesses()).filter((ssh) => ssh.ppid === Deno.pid).map((ssh) => ssh.pid);
}

Deno.test({
  name: "OpenSSH carrier: the master and each command's ssh lead a session of their own, " +
    "with no terminal, and are ssh itself (nothing forked in between)",
  ignore,
  fn: () =>
    withServer({}, (server) =>
      withConnection(server, async (connection) => {
        const running = await connection.spawn("cat", { deadlineMs: 15_000 });
        try {
          const pids = await sshChildren();
          assert.ok(pids.length >= 2, `ssh children: ${pids}`);
          for (const pid of pids) {
            assert.deepEqual(await sessionOf(pid), { comm: "ssh", session: pid, tty: 0 });
          }
        } finally {
          running.end();
          await running.result;
        }
      })),
});

Deno.test("spawnInOwnSession starts a command in a session of its own with setsid or without", async () => {
  for (const setsid of [undefined, null]) {
    const child = setsid === undefined
      ? spawnInOwnSession("/bin/sleep", ["30"], undefined)
      : spawnInOwnSession("/bin/sleep", ["30"], undefined, setsid);
    try {
      const pid = child.pid!;
      // A setsid command has exec'd sleep once its name shows.
      await waitFor(async () => (await sessionOf(pid)).comm === "sleep", 5_000, "sleep to start");
      assert.deepEqual(await sessionOf(pid), { comm: "sleep", session: pid, tty: 0 });
    } finally {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }
  }
});

/** The `ssh` processes of this machine whose command line names `text`. */
async function sshNaming(text: string): Promise<number[]> {
  return (await sshProcesses())
    .filter((ssh) => ssh.words.some((word) => word.includes(text)))
    .map((ssh) => ssh.pid);
}

Deno.test({
  name: "OpenSSH carrier: the ssh of a commands-only connection ends when its daemon is killed -9",
  ignore,
  fn: () =>
    withServer({ sftpServer: false }, async (server) => {
      // A daemon killed with -9 cannot stop its ssh: each must end when its stdin closes.
      const script = `${server.dir}/hold.ts`;
      await Deno.writeTextFile(
        script,
        `import { SftpTransport } from ${
          JSON.stringify(import.meta.resolve("./sftp_transport.ts"))
        };
const transport = new SftpTransport(JSON.parse(Deno.args[0]), { connections: 1 });
const items = await transport.probe(["/tmp"]);
console.log(JSON.stringify(items.map((item) => item.check + ":" + item.ok)));
await new Promise(() => {});
`,
      );
      const holder = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, JSON.stringify(openssh(server))],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const ownDirectory = `contentmonster-ssh-${holder.pid}-`;
      try {
        const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const { value } = await reader.read();
        assert.match(value ?? "", /"auth:true"/, `the holder's probe: ${value}`);
        assert.ok((await sshNaming(ownDirectory)).length > 0, "the holder has no ssh running");
        holder.kill("SIGKILL");
        await holder.status;
        await waitFor(
          async () => (await sshNaming(ownDirectory)).length === 0,
          10_000,
          "the ssh of the killed holder to end",
        ).catch(async (error) => {
          for (const pid of await sshNaming(ownDirectory)) Deno.kill(pid, "SIGKILL");
          throw error;
        });
      } finally {
        try {
          holder.kill("SIGKILL");
        } catch {
          // Killed above.
        }
      }
    }),
});

const dropbearUnavailable = serverUnavailable("dropbear");
if (dropbearUnavailable) skipNotice("OpenSSH carrier on Dropbear", dropbearUnavailable);

for (
  const [label, start, skip] of [
    ["OpenSSH", startOpenSsh, ignore],
    ["Dropbear", startDropbear, ignore || dropbearUnavailable !== undefined],
  ] as const
) {
  Deno.test({
    name: `OpenSSH carrier runs a command ${label} ended silently once more, with its input`,
    ignore: skip,
    fn: () =>
      withServer({}, (server) =>
        withConnection(server, async (connection) => {
          // A shell killed before it printed anything ends its session without an exit
          // status, as Dropbear's closing a session before its command starts does.
          const firstRun = `${server.dir}/first-run`;
          const running = await connection.spawn(
            `mkdir ${firstRun} 2>/dev/null && kill -9 $$; cat`,
            { deadlineMs: 15_000 },
          );
          running.write("sent before it died\n");
          running.end();
          const result = await running.result;
          assert.equal(result.code, 0, result.stderr);
          assert.equal(result.stdout, "sent before it died\n");
          assert.equal(await pathExists(firstRun), true, "the first run never ran");
          assert.equal((await connection.exec("echo up", 15_000)).stdout, "up\n");

          // Once only: a command that always ends so fails as a lost connection.
          const runs = `${server.dir}/runs`;
          const error = await rejection(connection.exec(`echo >> ${runs}; kill -9 $$`, 15_000));
          assert.equal(error.code, "connection", error.message);
          assert.match(error.message, /ended its session without an exit status/);
          assert.equal(await Deno.readTextFile(runs), "\n\n");
        }), start),
  });
}
