/**
 * SshConnection's liveness rules against a real sshd behind the fault proxy:
 * an idle connection whose link goes silent is dropped by its own keepalive.
 * (A slow link with data in flight is covered end to end by
 * tests/faults_network_test.ts.)
 */
import assert from "node:assert/strict";
import { logger } from "../../src/log/logger.ts";
import { FaultProxy } from "../../tests/fault_proxy.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "../../tests/servers.ts";
import { loadCredentials } from "./auth.ts";
import { SshConnection } from "./connection.ts";
import { knownKeyTypesOf } from "./host_key.ts";

const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("SshConnection", unavailable);

Deno.test({
  name: "SshConnection drops an idle connection whose keepalive gets no reply within Timeout",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await startOpenSsh();
    const proxy = await FaultProxy.start({ target: { hostname: "127.0.0.1", port: server.port } });
    try {
      const timeout = 2;
      const vessel = server.vesselConfig({
        port: proxy.port,
        timeout,
        strictHostKeyChecking: "no",
      });
      const connection = await SshConnection.open({
        vessel,
        credentials: await loadCredentials(vessel, {}),
        knownKeyTypes: await knownKeyTypesOf(vessel),
        log: logger("test"),
      });
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
        connection.destroy();
      }
    } finally {
      await proxy.close();
      await server.stop();
    }
  },
});

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
          log: logger("test"),
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
