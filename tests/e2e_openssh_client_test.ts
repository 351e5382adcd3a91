/**
 * The OpenSSH client as ContentMonster's carrier, end to end through the CLI:
 * the daemon's `ssh` children end with it, whether it stops cleanly or is
 * killed, and `check` names the client it uses.
 */
import assert from "node:assert/strict";
import {
  CliProcess,
  fileSha256,
  pathExists,
  randomBytes,
  runCli,
  sha256,
  waitFor,
  Workspace,
} from "./cli_harness.ts";
import { serverUnavailable, skipNotice, startOpenSsh, type TestServer } from "./servers.ts";
import { carrierUnavailable } from "./sftp_conformance.ts";
import { vesselIni } from "./vessel_ini.ts";
import { loadConfig } from "../src/config/config.ts";
import { openTransportsAhead } from "../src/cli/transports_ahead.ts";
import { startReplicator } from "../src/cli/replicator.ts";
import { DatabaseLockedError, InstanceLock } from "../src/store/instance_lock.ts";

const unavailable = serverUnavailable("openssh") ?? carrierUnavailable("openssh");
if (unavailable) skipNotice("e2e_openssh_client_test.ts", unavailable);

/** PIDs of running `ssh` processes that belong to the ContentMonster process `pid`. */
async function sshChildrenOf(pid: number): Promise<number[]> {
  const found: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      // A zombie waiting for its parent has ended already.
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      if (cmdline.includes(`contentmonster-ssh-${pid}-`)) found.push(Number(entry.name));
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}

/** A daemon's settings.ini: `outbox` to one OpenSSH vessel, parts of 1 MiB. */
function daemonConfig(
  ws: Workspace,
  server: TestServer,
  extra: Record<string, string> = {},
): Promise<string> {
  return ws.config(`[MONSTER]
Database = state/cm.db
ChunkSize = 1048576
[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(server, "v", { SSHClient: "openssh", ...extra })}
`);
}

for (const signal of ["SIGKILL", "SIGTERM"] as const) {
  Deno.test({
    name: `${signal} of the daemon mid-transfer leaves no ssh process behind`,
    ignore: unavailable !== undefined,
    sanitizeResources: false,
    fn: async () => {
      const ws = await Workspace.create();
      const server = await startOpenSsh();
      try {
        await ws.write("outbox/slow.bin", randomBytes(8 << 20, 31));
        const config = await daemonConfig(ws, server, { BandwidthLimit: "1048576" });
        const daemon = new CliProcess(["run", "--config", config]);
        // Both connections and at least one remote command are up mid-transfer.
        await waitFor(
          async () => (await sshChildrenOf(daemon.pid)).length >= 2,
          20_000,
          "the daemon's ssh processes",
        );
        daemon.kill(signal);
        const status = await daemon.exited();
        if (signal === "SIGTERM") assert.equal(status.code, 0, daemon.log);
        await waitFor(
          async () => (await sshChildrenOf(daemon.pid)).length === 0,
          5_000,
          `no ssh left by the daemon (${await sshChildrenOf(daemon.pid)})`,
        );
      } finally {
        await server.stop();
        await ws.cleanup();
      }
    },
  });
}

Deno.test({
  name: "a start that cannot take the state database ends the logins it began ahead",
  ignore: unavailable !== undefined,
  fn: async () => {
    const ws = await Workspace.create();
    const server = await startOpenSsh();
    let lock: InstanceLock | undefined;
    try {
      await ws.write("outbox/a.bin", randomBytes(4096, 7));
      const config = await loadConfig(await daemonConfig(ws, server));
      await ws.mkdir("state");
      lock = await InstanceLock.acquire(ws.path("state/cm.db"));
      const transports = await openTransportsAhead(config);
      await waitFor(
        async () => (await sshChildrenOf(Deno.pid)).length > 0,
        10_000,
        "the login begun before the state database opens",
      );
      await assert.rejects(
        startReplicator(config, { once: true, transports }),
        DatabaseLockedError,
      );
      assert.deepEqual(await sshChildrenOf(Deno.pid), [], "an ssh left by the failed start");
    } finally {
      lock?.release();
      await server.stop();
      await ws.cleanup();
    }
  },
});

Deno.test({
  name: "check names the OpenSSH client and the ssh_config it reads",
  ignore: unavailable !== undefined,
  fn: async () => {
    const ws = await Workspace.create();
    const server = await startOpenSsh();
    try {
      await ws.mkdir("outbox");
      const config = await ws.config(`[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(server, "v", { SSHClient: "openssh" })}
`);
      const result = await runCli(["check", "--config", config]);
      assert.equal(result.code, 0, result.stdout + result.stderr);
      assert.match(result.stdout, /ssh client\s+ok\s+openssh \(\/\S*ssh; ssh_config: none\)/);
      assert.match(result.stdout, /auth\s+ok\s+root with key/);
      assert.match(result.stderr, /SSH client: openssh/);
      // Under the permissions it ships with (no --allow-all, so no /proc for Deno), a shore
      // with AES instructions still puts AES-GCM first: ssh's default ChaCha20 is slower here.
      const aes = /^(flags|Features)\s*:(.* )?aes( |$)/m.test(
        await Deno.readTextFile("/proc/cpuinfo"),
      );
      assert.match(
        result.stdout,
        aes ? /connect\s+ok\s+.*aes128-gcm@openssh\.com/ : /connect\s+ok\s+.*chacha20-poly1305/,
      );
    } finally {
      await server.stop();
      await ws.cleanup();
    }
  },
});

/** The private ssh directories (in `tmp`) of the ContentMonster process `pid`. */
async function privateDirectoriesOf(tmp: string, pid: number): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(tmp)) {
    if (entry.name.startsWith(`contentmonster-ssh-${pid}-`)) found.push(`${tmp}/${entry.name}`);
  }
  return found;
}

Deno.test({
  name: "check keeps a running daemon's ssh directory however old, and removes a killed one's",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  fn: async () => {
    const ws = await Workspace.create();
    const server = await startOpenSsh();
    const tmp = ws.path("tmp");
    await Deno.mkdir(tmp, { mode: 0o700 });
    const env = { TMPDIR: tmp };
    try {
      await ws.mkdir("outbox");
      const config = await daemonConfig(ws, server);
      const daemon = new CliProcess(["run", "--config", config], env);
      try {
        let live: string | undefined;
        await waitFor(
          async () => {
            [live] = await privateDirectoriesOf(tmp, daemon.pid);
            return live !== undefined && await pathExists(`${live}/c0`);
          },
          20_000,
          () => `the daemon's private directory with its control socket; log:\n${daemon.log}`,
        );
        // What `kill -9` leaves: a directory of a process that no longer runs.
        const gone = new Deno.Command("true").spawn();
        const { success } = await gone.status;
        assert.ok(success);
        const leftover = `${tmp}/contentmonster-ssh-${gone.pid}-left`;
        await Deno.mkdir(leftover, { mode: 0o700 });
        await Deno.writeTextFile(`${leftover}/login1.password`, "secret", { mode: 0o600 });
        // Both look idle for 20 minutes: a daemon whose connections stay up makes no new socket.
        const old = new Date(Date.now() - 20 * 60_000);
        for (const dir of [live!, leftover]) await Deno.utime(dir, old, old);

        const check = await runCli(["check", "--config", config], { env });
        assert.equal(check.code, 0, check.stdout + check.stderr);
        assert.ok(await pathExists(`${live}/c0`), "check removed the running daemon's sockets");
        assert.equal(await pathExists(leftover), false, "check left a killed process's secrets");

        // The daemon's connection still runs its commands (the parts' cat, the hash).
        const data = randomBytes(3 << 20, 41);
        await ws.write("outbox/after.bin", data);
        await waitFor(
          () => pathExists(ws.path("outbox/processed/after.bin")),
          30_000,
          () => `after.bin in processed/; log:\n${daemon.log}`,
        );
        assert.equal(await fileSha256(ws.path("dest/after.bin")), sha256(data));
        assert.doesNotMatch(daemon.log, /retrying in/, "a delivery failed after check");
      } finally {
        daemon.kill("SIGTERM");
        await daemon.exited();
      }
    } finally {
      await server.stop();
      await ws.cleanup();
    }
  },
});
