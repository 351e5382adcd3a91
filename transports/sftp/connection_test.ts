/**
 * SshConnection's liveness rules against a real sshd, over both clients:
 * an idle connection whose link goes silent is dropped by its own
 * keepalive; one whose SFTP server stops answering is dropped though the
 * link lives. (A slow link with data in flight, which must not be dropped,
 * is covered end to end by tests/faults_slow_link_test.ts, and a stalled
 * one by tests/faults_network_test.ts.)
 */
import assert from "node:assert/strict";
import { FaultProxy } from "../../tests/fault_proxy.ts";
import {
  serverUnavailable,
  skipNotice,
  startOpenSsh,
  type TestServer,
} from "../../tests/servers.ts";
import { loadCredentials } from "./auth.ts";
import { type LinkProgress, SshConnection } from "./connection.ts";
import { knownKeyTypesOf } from "./host_key.ts";
import { openOpenSsh } from "./openssh_link.ts";
import { findSsh, prepareOpenSsh } from "./openssh_setup.ts";
import { silentLogger } from "../transport.ts";
import type { SftpVessel } from "./options.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("SshConnection", unavailable);

/** One connection to `vessel` over its `SSHClient`, and how to close it. */
async function connect(
  vessel: SftpVessel,
  linkProgress?: LinkProgress,
): Promise<{ connection: SshConnection; close: () => Promise<void> }> {
  if (vessel.sshClient === "openssh") {
    const setup = await prepareOpenSsh(vessel, findSsh()!);
    const connection = await openOpenSsh({
      vessel,
      log: silentLogger,
      setup,
      controlPath: `${setup.dir}/c0`,
      linkProgress,
    });
    return {
      connection,
      close: async () => {
        await connection.close();
        await Deno.remove(setup.dir, { recursive: true });
      },
    };
  }
  const connection = await SshConnection.open({
    vessel,
    credentials: await loadCredentials(vessel, {}),
    knownKeyTypes: await knownKeyTypesOf(vessel),
    log: silentLogger,
    linkProgress,
  });
  return { connection, close: () => Promise.resolve(connection.destroy()) };
}

const CARRIERS = ["openssh", "builtin"] as const;

for (const carrier of CARRIERS) {
  Deno.test({
    name: `SshConnection (${carrier}) drops an idle connection whose keepalive gets no reply ` +
      "within Timeout",
    ignore: unavailable !== undefined || (carrier === "openssh" && !findSsh()),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const server = await startOpenSsh();
      const proxy = await FaultProxy.start({
        target: { hostname: "127.0.0.1", port: server.port },
      });
      try {
        const timeout = 2;
        const vessel = server.vesselConfig({
          port: proxy.port,
          timeout,
          strictHostKeyChecking: "no",
          sshClient: carrier,
        });
        const { connection, close } = await connect(vessel);
        try {
          await connection.request<string>(".", (sftp, done) => sftp.realpath(".", done));
          // Idle and healthy: keepalives are answered, the connection stays.
          await new Promise((resolve) => setTimeout(resolve, 3 * timeout * 1000));
          assert.equal(connection.closed, false, "a healthy idle connection was dropped");
          proxy.stall();
          const stalled = performance.now();
          while (!connection.closed && performance.now() - stalled < 6 * timeout * 1000) {
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          const detected = (performance.now() - stalled) / 1000;
          assert.ok(connection.closed, "a silent idle connection was kept");
          // A keepalive goes out after Timeout/3 idle and is judged after Timeout.
          assert.ok(detected <= 2 * timeout, `detected after ${detected.toFixed(2)} s`);
        } finally {
          await close();
        }
      } finally {
        await proxy.close();
        await server.stop();
      }
    },
  });
}

Deno.test({
  name:
    "SshConnection asks once more for a refused SFTP subsystem, and fails cleanly if closed meanwhile",
  ignore: unavailable !== undefined,
  fn: async () => {
    const server = await startOpenSsh({ sftpServer: false }); // refuses the subsystem
    try {
      const vessel = server.vesselConfig();
      const open = async () =>
        await SshConnection.open({
          vessel,
          credentials: await loadCredentials(vessel, {}),
          knownKeyTypes: await knownKeyTypesOf(vessel),
          log: silentLogger,
        });
      const refused = await open();
      try {
        const started = performance.now();
        await assert.rejects(refused.sftp(), /no SFTP subsystem/);
        // Asked twice, the second 50 ms after the first refusal.
        assert.ok(performance.now() - started >= 50, "the refusal was taken at once");
      } finally {
        refused.destroy();
      }
      // Closed while the second ask waits: the call fails, nothing throws out of a timer.
      const closing = await open();
      const asked = closing.sftp();
      asked.catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 25));
      closing.destroy();
      await assert.rejects(asked);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await server.stop();
    }
  },
});

/** The server's processes whose command line names its SFTP server. */
async function sftpServerPids(server: TestServer): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await server.pids()) {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    if (cmdline.includes("sftp-server")) pids.push(pid);
  }
  return pids;
}

/**
 * Stops `connection`'s SFTP server (SIGSTOP), asks it once more, and returns how many
 * servers were stopped and the seconds until the connection dropped, failing after
 * `limitSeconds`; the servers run again before it returns.
 */
async function secondsUntilDroppedWhenStopped(
  connection: SshConnection,
  server: TestServer,
  limitSeconds: number,
): Promise<{ servers: number; seconds: number }> {
  await connection.request<string>(".", (sftp, done) => sftp.realpath(".", done));
  const stopped = await sftpServerPids(server);
  try {
    for (const pid of stopped) Deno.kill(pid, "SIGSTOP");
    const asked = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      assert.rejects(
        connection.request<string>(".", (sftp, done) => sftp.realpath(".", done)),
        /no SFTP reply or progress/,
      ),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("a connection whose SFTP server stopped was kept")),
          limitSeconds * 1000,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    return { servers: stopped.length, seconds: (performance.now() - asked) / 1000 };
  } finally {
    for (const pid of stopped) Deno.kill(pid, "SIGCONT");
  }
}

for (const carrier of CARRIERS) {
  Deno.test({
    name: `SshConnection (${carrier}) drops a connection whose SFTP server stopped answering, ` +
      "though the link still answers keepalives",
    ignore: unavailable !== undefined || (carrier === "openssh" && !findSsh()),
    fn: async () => {
      const server = await startOpenSsh();
      const timeout = 2;
      const { connection, close } = await connect(
        server.vesselConfig({ timeout, sshClient: carrier }),
      );
      try {
        const { servers, seconds: detected } = await secondsUntilDroppedWhenStopped(
          connection,
          server,
          6 * timeout,
        );
        assert.equal(servers, 1, "one SFTP server runs for the connection");
        assert.ok(connection.closed);
        // Nothing but the stopped server's replies could have kept it: no keepalive goes out
        // while a call is in flight.
        assert.ok(detected <= 2 * timeout, `detected after ${detected.toFixed(2)} s`);
      } finally {
        await close();
        await server.stop();
      }
    },
  });
}

for (const carrier of CARRIERS) {
  Deno.test({
    name: `SshConnection (${carrier}) whose SFTP server stopped is dropped after 4 Timeouts ` +
      "while other connections over its link progress",
    ignore: unavailable !== undefined || (carrier === "openssh" && !findSsh()),
    fn: async () => {
      const server = await startOpenSsh();
      const timeout = 1;
      // The link's other connections, progressing all along.
      const linkProgress: LinkProgress = { at: Date.now() };
      const othersProgress = setInterval(() => linkProgress.at = Date.now(), 100);
      const { connection, close } = await connect(
        server.vesselConfig({ timeout, sshClient: carrier }),
        linkProgress,
      );
      try {
        const { seconds: detected } = await secondsUntilDroppedWhenStopped(
          connection,
          server,
          8 * timeout,
        );
        assert.ok(connection.closed);
        assert.ok(
          detected > 3 * timeout && detected <= 6 * timeout,
          `detected after ${detected.toFixed(2)} s`,
        );
      } finally {
        clearInterval(othersProgress);
        await close();
        await server.stop();
      }
    },
  });
}
