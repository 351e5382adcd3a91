/**
 * The OpenSSH client as ContentMonster's carrier, end to end through the CLI:
 * the daemon's `ssh` children end with it, whether it stops cleanly or is
 * killed, and `check` names the client it uses.
 */
import assert from "node:assert/strict";
import { CliProcess, randomBytes, runCli, waitFor, Workspace } from "./cli_harness.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";
import { carrierUnavailable } from "./sftp_conformance.ts";
import { vesselIni } from "./vessel_ini.ts";

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
        const config = await ws.config(`[MONSTER]
Database = state/cm.db
ChunkSize = 1048576
[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(server, "v", { SSHClient: "openssh", BandwidthLimit: "1048576" })}
`);
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
    } finally {
      await server.stop();
      await ws.cleanup();
    }
  },
});
