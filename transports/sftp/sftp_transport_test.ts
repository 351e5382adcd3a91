/**
 * SftpTransport against real loopback servers: what the conformance suite
 * does not cover (dropped and frozen connections, refused logins, vessels
 * without SFTP, full disks, big files through the remote `cat`).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Secret } from "../../src/config/secret.ts";
import {
  serverUnavailable,
  SFTP_SERVER,
  skipNotice,
  startDropbear,
  startOpenSsh,
  type TestServer,
} from "../../tests/servers.ts";
import {
  assembleAll,
  silentLogger,
  tempPathFor,
  type Transport,
  TransportError,
} from "../transport.ts";
import { pathExistsSync } from "../../tests/cli_harness.ts";
import { HOSTILE_NAMES } from "../../tests/conformance.ts";
import { proxiedTransport } from "../../tests/proxied_transport.ts";
import { chacha20CiphersFinalized } from "./_ssh2.ts";
import { SftpTransport } from "./sftp_transport.ts";

const unavailable = serverUnavailable("openssh") ?? serverUnavailable("dropbear");
if (unavailable) skipNotice("SFTP transport", unavailable);
const ignore = unavailable !== undefined;

function sha256(...chunks: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest("hex");
}

function bytes(length: number, seed: number): Uint8Array {
  const data = new Uint8Array(length);
  let state = seed;
  for (let i = 0; i < length; i++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    data[i] = state >>> 24;
  }
  return data;
}

async function rejection(promise: Promise<unknown>): Promise<TransportError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof TransportError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

async function withServer(
  start: () => Promise<TestServer>,
  body: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await start();
  try {
    await body(server);
  } finally {
    await server.stop();
  }
}

async function withTransport(
  transport: Transport,
  body: (transport: Transport) => Promise<void>,
): Promise<void> {
  try {
    await body(transport);
  } finally {
    await transport.close();
  }
}

Deno.test({
  name: "SftpTransport assembles a multi-MiB file with the vessel's cat and hasher",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const vessel = server.vesselConfig();
      await withTransport(new SftpTransport(vessel), async (transport) => {
        const destination = `${server.dir}/big/-x $(id).bin`;
        const parts = [bytes(3 << 20, 1), bytes(3 << 20, 2), bytes(12345, 3)];
        await transport.prepare("big1", destination);
        await Promise.all(parts.map((data, index) => transport.putPart("big1", index, data)));
        const assembled = await assembleAll(transport, "big1", parts.length, destination);
        assert.equal(assembled.sha256, sha256(...parts));
        assert.equal(assembled.size, (6 << 20) + 12345);
        await transport.publish(assembled.tempPath, destination);
        assert.equal(await transport.hash(destination), sha256(...parts));
        assert.equal(sha256(await Deno.readFile(destination)), sha256(...parts));
        await transport.removeParts("big1");

        // Many parts are found by listing the part directory instead of one stat each.
        const many = Array.from({ length: 20 }, (_, index) => bytes(5000 + index, index));
        await transport.prepare("many", destination);
        for (const [index, data] of many.entries()) {
          if (index !== 7 && index !== 13) await transport.putPart("many", index, data);
        }
        const error = await rejection(assembleAll(transport, "many", many.length, destination));
        assert.equal(error.code, "part-missing");
        assert.match(error.message, /: parts 7, 13 are missing$/);
        await transport.putPart("many", 7, many[7]);
        await transport.putPart("many", 13, many[13]);
        const whole = await assembleAll(transport, "many", many.length, destination);
        assert.equal(whole.sha256, sha256(...many));
        await transport.remove(whole.tempPath);
        await transport.removeParts("many");
      });
      await withTransport(
        new SftpTransport(server.vesselConfig({ fsync: false })),
        async (transport) => {
          const destination = `${server.dir}/big/nofsync.bin`;
          await transport.prepare("big2", destination);
          await transport.putPart("big2", 0, bytes(2 << 20, 4));
          const assembled = await assembleAll(transport, "big2", 1, destination);
          assert.equal(assembled.sha256, sha256(bytes(2 << 20, 4)));
          await transport.remove(assembled.tempPath);
          await transport.removeParts("big2");
        },
      );
    }),
});

Deno.test({
  name: "SftpTransport says when a part's last bytes leave, before the vessel has stored it",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const vessel = server.vesselConfig();
      await withTransport(new SftpTransport(vessel), async (transport) => {
        const destination = `${server.dir}/ending/file.bin`;
        const data = bytes(4 << 20, 9);
        await transport.prepare("ending", destination);
        const seen: { tempBytes: number; stored: boolean }[] = [];
        let resolved = false;
        await transport.putPart("ending", 0, data, 0, () => {
          assert.equal(resolved, false, "told before putPart resolved");
          seen.push({
            tempBytes: Deno.statSync(`${vessel.tempDir}/ending/0.part.tmp`).size,
            stored: pathExistsSync(`${vessel.tempDir}/ending/0.part`),
          });
        });
        resolved = true;
        assert.equal(seen.length, 1, "told once");
        assert.equal(seen[0].stored, false);
        assert.ok(seen[0].tempBytes < data.byteLength, `${seen[0].tempBytes} bytes there already`);
        const assembled = await assembleAll(transport, "ending", 1, destination);
        assert.equal(assembled.sha256, sha256(data));
        await transport.remove(assembled.tempPath);
        await transport.removeParts("ending");
      });
    }),
});

async function waitFor(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  return (await Deno.stat(path).catch(() => undefined))?.size;
}

/**
 * PIDs of the vessel's shells running a streamed assembly (forks of it
 * included), searched in all of /proc: once sshd is gone they are no longer
 * the server's descendants.
 */
async function assemblyShells(server: TestServer): Promise<number[]> {
  const found = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`).catch(() => "");
    if (cmdline.includes("parts $n $t end") && cmdline.includes(server.dir)) {
      found.push(Number(entry.name));
    }
  }
  return found;
}

for (const [kind, start] of [["OpenSSH", startOpenSsh], ["Dropbear", startDropbear]] as const) {
  Deno.test({
    name: `SftpTransport (${kind}) assembles parts on the vessel as they arrive, in order`,
    ignore,
    fn: () =>
      withServer(start, async (server) => {
        await withTransport(new SftpTransport(server.vesselConfig()), async (transport) => {
          const destination = `${server.dir}/stream/-big $(id).bin`;
          const tempPath = tempPathFor("stream1", destination);
          const parts = [bytes(3 << 20, 1), bytes(3 << 20, 2), bytes(3 << 20, 3), bytes(1234, 4)];
          await transport.prepare("stream1", destination);
          const assembly = transport.startAssembly("stream1", parts.length, destination);
          for (const index of [0, 1]) {
            await transport.putPart("stream1", index, parts[index]);
            assembly.partReady(index);
          }
          await waitFor("parts 0 and 1 are in the temp file", async () =>
            await sizeOf(tempPath) === 6 << 20);
          await transport.putPart("stream1", 3, parts[3]);
          assembly.partReady(3);
          await new Promise((resolve) =>
            setTimeout(resolve, 200)
          );
          assert.equal(await sizeOf(tempPath), 6 << 20, "part 3 was consumed before part 2");
          await transport.putPart("stream1", 2, parts[2]);
          assembly.partReady(2);
          const assembled = await assembly.finish();
          assert.equal(assembled.sha256, sha256(...parts));
          assert.equal(assembled.size, (9 << 20) + 1234);
          assert.equal(sha256(await Deno.readFile(tempPath)), sha256(...parts));
          await transport.publish(assembled.tempPath, destination);
          await transport.removeParts("stream1");
          assert.deepEqual(await assemblyShells(server), []);
        });
      }),
  });
}

Deno.test({
  name:
    "SftpTransport's streamed assembly ends on the vessel, leaving nothing, when the connection drops",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const [listener] = await server.pids();
      for (const how of ["sshd killed", "transport closed"]) {
        const vessel = server.vesselConfig({ timeout: 5 });
        const transport = new SftpTransport(vessel, { connections: 1 });
        await withTransport(transport, async () => {
          const destination = `${server.dir}/dropped/file.bin`;
          const tempPath = tempPathFor("drop", destination);
          await transport.prepare("drop", destination);
          const assembly = transport.startAssembly("drop", 3, destination);
          await transport.putPart("drop", 0, bytes(100_000, 1));
          assembly.partReady(0);
          await waitFor(
            "part 0 is in the temp file",
            async () => await sizeOf(tempPath) === 100_000,
          );
          assert.ok((await assemblyShells(server)).length > 0);
          if (how === "transport closed") await transport.close();
          else {
            for (const pid of await server.pids()) {
              const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
              if (pid !== listener && cmdline.startsWith("sshd")) Deno.kill(pid, "SIGKILL");
            }
          }
          const error = await rejection(assembly.finish());
          assert.equal(error.code, "connection", `${how}: ${error.message}`);
          await waitFor(
            `${how}: the vessel's command ended`,
            async () => (await assemblyShells(server)).length === 0,
          );
          assert.equal(await sizeOf(tempPath), undefined, `${how}: the temp file was left`);
          await assembly.abort();
        });
      }
      assert.deepEqual(await server.pids(), [listener]);
    }),
});

Deno.test({
  name: "SftpTransport fails a streamed assembly that makes no progress with code connection",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const vessel = server.vesselConfig({ timeout: 1 });
      await withTransport(new SftpTransport(vessel, { connections: 1 }), async (transport) => {
        const destination = `${server.dir}/stalled/file.bin`;
        const tempPath = tempPathFor("stall", destination);
        await transport.prepare("stall", destination);
        const assembly = transport.startAssembly("stall", 2, destination);
        await transport.putPart("stall", 0, bytes(1000, 1));
        assembly.partReady(0);
        await waitFor("part 0 is in the temp file", async () => await sizeOf(tempPath) === 1000);
        // Idle while waiting for parts is no stall: nothing fails in 3 Timeouts.
        await new Promise((resolve) => setTimeout(resolve, 3500));
        const shells = await assemblyShells(server);
        for (const pid of shells) Deno.kill(pid, "SIGSTOP");
        let error: TransportError;
        const started = Date.now();
        try {
          await transport.putPart("stall", 1, bytes(1000, 2));
          assembly.partReady(1);
          error = await rejection(assembly.finish());
        } finally {
          for (const pid of shells) Deno.kill(pid, "SIGCONT");
        }
        const elapsed = (Date.now() - started) / 1000;
        assert.equal(error.code, "connection", error.message);
        assert.match(error.message, /^Cannot assemble .* on vessel "openssh": .*deadline/);
        assert.ok(elapsed > 2.5 && elapsed < 8, `failed after ${elapsed} s`);
        await waitFor("the vessel's command ended", async () =>
          (await assemblyShells(server)).length === 0);
        assert.equal(await sizeOf(tempPath), undefined, "the temp file was left");
        await transport.removeParts("stall");
      });
    }),
});

Deno.test({
  name: "SftpTransport's putWhole creates a directory removed behind its back again",
  ignore,
  fn: () =>
    withServer(startDropbear, async (server) => {
      await withTransport(new SftpTransport(server.vesselConfig()), async (transport) => {
        const destination = `${server.dir}/whole/again/file.txt`;
        for (let round = 0; round < 3; round++) {
          const data = bytes(100 + round, round);
          const assembled = await transport.putWhole("again", destination, data);
          assert.equal(assembled.sha256, sha256(data));
          await transport.publish(assembled.tempPath, destination);
          assert.deepEqual(await Deno.readFile(destination), data);
          await Deno.remove(`${server.dir}/whole`, { recursive: true });
        }
      });
      await withTransport(
        new SftpTransport(server.vesselConfig({ fsync: false })),
        async (transport) => {
          const data = bytes(1 << 20, 9); // Hashed on the vessel.
          const assembled = await transport.putWhole("big", `${server.dir}/whole/big`, data);
          assert.equal(assembled.sha256, sha256(data));
          assert.equal(assembled.size, 1 << 20);
          assert.equal(sha256(await Deno.readFile(assembled.tempPath)), sha256(data));
        },
      );
    }),
});

Deno.test({
  name: "SftpTransport assembles hostile names above the small-file size with the remote cat",
  ignore,
  fn: () =>
    withServer(startDropbear, async (server) => {
      for (const fsync of [true, false]) {
        const vessel = server.vesselConfig({ fsync });
        await withTransport(new SftpTransport(vessel), async (transport) => {
          for (const [index, name] of HOSTILE_NAMES.entries()) {
            const key = `hostile${index}${fsync ? "s" : "n"}`;
            const destination = `${server.dir}/dir with 'quote' $x/${name}`;
            const parts = [bytes(200_000, index), bytes(100_000, index + 100)];
            await transport.prepare(key, destination);
            for (const [part, data] of parts.entries()) await transport.putPart(key, part, data);
            const assembled = await assembleAll(transport, key, 2, destination);
            assert.equal(assembled.sha256, sha256(...parts), JSON.stringify(name));
            await transport.publish(assembled.tempPath, destination);
            assert.equal(await transport.hash(destination), sha256(...parts));
            assert.equal(sha256(await Deno.readFile(destination)), sha256(...parts));
            await transport.removeParts(key);
          }
        });
        const names = [...Deno.readDirSync(`${server.dir}/dir with 'quote' $x`)].map((e) => e.name);
        assert.deepEqual(names.sort(), [...HOSTILE_NAMES].sort());
      }
    }),
});

Deno.test({
  name: "SftpTransport survives OpenSSH's ChaCha20 re-key after 1 GiB without leaking ciphers",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      // ssh2's own ChaCha20 (in JavaScript); the OpenSSH client re-keys in C.
      const vessel = server.vesselConfig({ sshClient: "builtin" });
      await withTransport(new SftpTransport(vessel, { connections: 1 }), async (transport) => {
        const connect = (await transport.probe([])).find((item) => item.check === "connect");
        assert.match(connect?.detail ?? "", /chacha20-poly1305@openssh\.com/);
        await transport.prepare("rekey", `${server.dir}/rekey.bin`);
        const data = bytes(16 << 20, 7);
        const before = chacha20CiphersFinalized();
        // 1.1 GiB over one connection: sshd re-keys ChaCha20 after 1 GiB.
        for (let round = 0; round < 70; round++) await transport.putPart("rekey", 0, data);
        // Three ChaCha20 ciphers per packet of at most 32 KiB, all finalized.
        assert.ok(chacha20CiphersFinalized() - before > 3 * ((70 * 16) << 5));
        await transport.removeParts("rekey");
      });
    }),
});

Deno.test({
  name: "SftpTransport rejects pending calls with code connection when the server freezes",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const vessel = server.vesselConfig({ timeout: 2 });
      await withTransport(new SftpTransport(vessel), async (transport) => {
        const destination = `${server.dir}/frozen/file.bin`;
        await transport.prepare("freeze", destination);
        await transport.putPart("freeze", 0, bytes(1000, 1));
        // Every connection in use is open: a login still under way when sshd stops could
        // fork a session the signal misses.
        const pool = (transport as SftpTransport).connections;
        await waitFor("every connection open", () => Promise.resolve(pool.open === 2));
        await server.signal("SIGSTOP");
        const started = Date.now();
        try {
          // Each call may be on its own connection, so they fail at different times.
          const calls = [
            transport.putPart("freeze", 1, bytes(8 << 20, 2)),
            assembleAll(transport, "freeze", 1, destination),
            transport.listParts("freeze"),
          ].map(rejection);
          for (const call of calls) {
            const error = await call;
            assert.equal(error.code, "connection", error.message);
            assert.equal(error.retryable, true);
            assert.match(error.message, /vessel "openssh"/);
          }
          const elapsed = (Date.now() - started) / 1000;
          assert.ok(elapsed < 2 * vessel.timeout + 3, `took ${elapsed} s`);
        } finally {
          await server.signal("SIGCONT");
        }
        // The next call reconnects.
        await transport.putPart("freeze", 1, bytes(1000, 3));
        assert.deepEqual([...await transport.listParts("freeze")].sort(), [0, 1]);
        await transport.removeParts("freeze");
      });
    }),
});

Deno.test({
  name: "SftpTransport rejects with code connection when the session is killed, then reconnects",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const link = await proxiedTransport(server, { vessel: { timeout: 5 } });
      const { transport, vessel } = link;
      try {
        const destination = `${server.dir}/killed/file.bin`;
        await transport.prepare("kill", destination);
        const [listener] = await server.pids();
        // Throttled, so that the part cannot be whole before the kill: unthrottled it once was
        // (this process's event loop, busy sending, ran the check below too late).
        link.proxy.throttle(4 << 20);
        const upload = transport.putPart("kill", 0, bytes(32 << 20, 1));
        // Killed once its writes arrive: a kill before they start only makes the call log in anew.
        const partial = `${vessel.tempDir}/kill/0.part.tmp`;
        await waitFor(
          "the part's first writes arrive",
          async () => (await sizeOf(partial) ?? 0) > 0,
        );
        for (const pid of await server.pids()) if (pid !== listener) Deno.kill(pid, "SIGKILL");
        const started = Date.now();
        const error = await rejection(upload);
        assert.equal(error.code, "connection", error.message);
        assert.match(error.message, /^Cannot put part 0 of "kill" on vessel "openssh": /);
        assert.ok(Date.now() - started < 5000);
        link.proxy.throttle(undefined);
        await transport.putPart("kill", 0, bytes(1000, 2));
        assert.deepEqual([...await transport.listParts("kill")], [0]);
        await transport.removeParts("kill");
      } finally {
        await link.close();
      }
    }),
});

Deno.test({
  name:
    "SftpTransport publishes 40 small files into one directory at once, each whole with its mode",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const vessel = server.vesselConfig({ fsync: true });
      await withTransport(new SftpTransport(vessel), async (transport) => {
        const dir = `${server.dir}/burst`;
        const files = Array.from({ length: 40 }, (_, i) => bytes(3000 + i, i + 1));
        // Renames and the directory's fsyncs interleave: later files join a later fsync.
        await Promise.all(files.map(async (data, i) => {
          const mode = 0o640 + (i % 2) * 4;
          const assembled = await transport.putWhole(`burst-${i}`, `${dir}/f${i}`, data, mode);
          assert.equal(assembled.sha256, sha256(data));
          await transport.publish(assembled.tempPath, `${dir}/f${i}`);
        }));
        for (const [i, data] of files.entries()) {
          const stored = await Deno.readFile(`${dir}/f${i}`);
          assert.equal(sha256(stored), sha256(data), `f${i}`);
          assert.equal((await Deno.stat(`${dir}/f${i}`)).mode! & 0o777, 0o640 + (i % 2) * 4);
        }
        const names = [];
        for await (const entry of Deno.readDir(dir)) names.push(entry.name);
        assert.equal(names.length, 40, "no temp file left");
      });
    }),
});

Deno.test({
  name: "SftpTransport reports an unreachable vessel with code connection, also in probe()",
  ignore,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const transport = new SftpTransport({
      name: "gone",
      address: "127.0.0.1",
      port,
      username: "root",
      knownHostsFile: "/dev/null",
      strictHostKeyChecking: "yes",
      tempDir: "/tmp/.ContentMonster",
      timeout: 2,
      fsync: true,
      password: new Secret("not-used"),
    });
    await withTransport(transport, async () => {
      const error = await rejection(transport.listParts("k"));
      assert.equal(error.code, "connection");
      assert.match(error.message, new RegExp(`vessel "gone" \\(root@127\\.0\\.0\\.1:${port}\\)`));
      const items = await transport.probe(["/srv"]);
      assert.deepEqual(items.map((item) => [item.check, item.ok]), [
        ["ssh client", true],
        ["connect", false],
      ]);
    });
  },
});

Deno.test({
  name: "SftpTransport gives up on a server that accepts but never speaks, within Timeout",
  ignore,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const connection of listener) accepted.push(connection);
    })();
    const transport = new SftpTransport({
      name: "mute",
      address: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
      username: "root",
      knownHostsFile: "/dev/null",
      strictHostKeyChecking: "yes",
      tempDir: "/tmp/.ContentMonster",
      timeout: 1,
      fsync: true,
      password: new Secret("not-used"),
    });
    try {
      const started = Date.now();
      const error = await rejection(transport.listParts("k"));
      assert.equal(error.code, "connection");
      assert.match(error.message, /no SSH handshake within 1 s \(Timeout\)/);
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    } finally {
      await transport.close();
      listener.close();
      await accepting.catch(() => {});
      for (const connection of accepted) connection.close();
    }
  },
});

Deno.test({
  name: "SftpTransport reports refused logins with code auth and never shows the password",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const stranger = `${server.dir}/stranger`;
      await new Deno.Command("ssh-keygen", {
        args: ["-q", "-t", "ed25519", "-N", "", "-f", stranger],
      }).output();
      const vessel = server.vesselConfig({
        identityFile: stranger,
        password: new Secret("hunter2-secret"),
      });
      await withTransport(new SftpTransport(vessel), async (transport) => {
        const error = await rejection(transport.listParts("k"));
        assert.equal(error.code, "auth");
        assert.equal(error.retryable, false);
        assert.match(error.message, /authentication refused/);
        assert.ok(error.message.includes(`key "${stranger}"`), error.message);
        // ssh tries a password only where the server offers it; ssh2 tries every method.
        if ((transport as SftpTransport).carrier === "builtin") {
          assert.ok(error.message.includes("password"));
        }
        assert.ok(!error.message.includes("hunter2"), error.message);
        const items = await transport.probe([]);
        assert.deepEqual(items.map((item) => [item.check, item.ok]), [
          ["ssh client", true],
          ["connect", true],
          ["host key", true],
          ["auth", false],
        ]);
        assert.ok(!JSON.stringify(items).includes("hunter2"));
      });
    }),
});

Deno.test({
  name: "SftpTransport logs in with a key held by ssh-agent",
  ignore,
  fn: () =>
    withServer(startOpenSsh, async (server) => {
      const socket = `${server.dir}/agent.sock`;
      const agent = new Deno.Command("ssh-agent", {
        args: ["-D", "-a", socket],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        // The agent creates its socket before it listens: ssh-add exits 2 (no agent) until then.
        let added: Deno.CommandOutput | undefined;
        for (let i = 0; i < 200 && (added?.code ?? 2) === 2; i++) {
          if (added) await new Promise((resolve) => setTimeout(resolve, 25));
          added = await new Deno.Command("ssh-add", {
            args: [server.identityFile],
            env: { SSH_AUTH_SOCK: socket },
            stderr: "null",
          }).output();
        }
        assert.equal(added?.code, 0);
        const vessel = server.vesselConfig({ identityFile: undefined });
        const transport = new SftpTransport(vessel, {
          authEnvironment: { agentSocket: socket, home: `${server.dir}/no-home` },
        });
        await withTransport(transport, async () => {
          assert.deepEqual([...await transport.listParts("agent")], []);
          const auth = (await transport.probe([])).find((item) => item.check === "auth");
          assert.equal(auth?.detail, "root with ssh-agent");
        });
      } finally {
        agent.kill();
        await agent.status;
      }
    }),
});

for (
  const [name, start, expected] of [
    [
      "OpenSSH without an sftp subsystem",
      () => startOpenSsh({ sftpServer: false }),
      /no SFTP subsystem/,
    ],
    [
      "OpenSSH whose sftp-server is not executable",
      () => startOpenSsh({ sftpServer: "/etc/passwd" }),
      /exit 126: not executable/,
    ],
    [
      "OpenSSH whose sftp-server is missing",
      () => startOpenSsh({ sftpServer: "/nonexistent/sftp-server" }),
      /exit 127: not found/,
    ],
    [
      "Dropbear whose sftp-server cannot run",
      () => startDropbear({ sftpServer: false }),
      /exit 126/,
    ],
  ] as const
) {
  Deno.test({
    name: `SftpTransport probe() and calls report ${name}`,
    ignore,
    fn: () =>
      withServer(start, async (server) => {
        await withTransport(new SftpTransport(server.vesselConfig()), async (transport) => {
          const items = await transport.probe([`${server.dir}/inbox`]);
          const byCheck = new Map(items.map((item) => [item.check, item]));
          for (const check of ["connect", "host key", "auth", "cat", "sha256"]) {
            assert.ok(byCheck.get(check)?.ok, `${check}: ${JSON.stringify(items)}`);
          }
          const sftp = byCheck.get("sftp");
          assert.equal(sftp?.ok, false);
          assert.match(sftp!.detail, expected);
          const error = await rejection(transport.listParts("k"));
          assert.equal(error.code, "unsupported");
          assert.match(error.message, expected);
        });
      }),
  });
}

Deno.test({
  name: "SftpTransport names a login shell's text before SFTP as the cause, on both carriers",
  ignore,
  fn: async () => {
    // What a vessel whose .bashrc echoes sends: sshd runs the subsystem through the shell.
    const dir = await Deno.makeTempDir();
    const noisy = `${dir}/noisy-sftp-server`;
    await Deno.writeTextFile(noisy, `#!/bin/sh\necho 'Welcome aboard'\nexec ${SFTP_SERVER}\n`);
    await Deno.chmod(noisy, 0o755);
    try {
      await withServer(() => startOpenSsh({ sftpServer: noisy }), async (server) => {
        for (
          const [sshClient, shown] of [["openssh", "Welcome aboard"], ["builtin", "Welc…"]] as const
        ) {
          const transport = new SftpTransport(server.vesselConfig({ sshClient }));
          await withTransport(transport, async () => {
            const error = await rejection(transport.listParts("k"));
            assert.equal(error.code, "unsupported", error.message);
            assert.ok(
              error.message.includes(`text before SFTP ("${shown}")`) &&
                error.message.includes(".bashrc"),
              `${sshClient}: ${error.message}`,
            );
          });
        }
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "test servers with binds give two vessels the same absolute path, each its own",
  ignore,
  fn: async () => {
    const mount = `/srv/cm-test-${crypto.randomUUID().slice(0, 8)}`;
    const [one, two] = [await Deno.makeTempDir(), await Deno.makeTempDir()];
    try {
      const servers: TestServer[] = [];
      try {
        servers.push(await startOpenSsh({ binds: { [mount]: one } }));
        servers.push(await startDropbear({ binds: { [mount]: two } }));
        for (const server of servers) {
          const vessel = server.vesselConfig({ tempDir: `${mount}/.tmp` });
          await withTransport(new SftpTransport(vessel), async (transport) => {
            const data = new TextEncoder().encode(`hello from ${server.kind}\n`);
            await transport.prepare("bind", `${mount}/inbox/hello.txt`);
            await transport.putPart("bind", 0, data);
            const assembled = await assembleAll(transport, "bind", 1, `${mount}/inbox/hello.txt`);
            await transport.publish(assembled.tempPath, `${mount}/inbox/hello.txt`);
            await transport.removeParts("bind");
          });
        }
      } finally {
        for (const server of servers) await server.stop();
      }
      assert.equal(await Deno.readTextFile(`${one}/inbox/hello.txt`), "hello from openssh\n");
      assert.equal(await Deno.readTextFile(`${two}/inbox/hello.txt`), "hello from dropbear\n");
      await assert.rejects(Deno.stat(mount), Deno.errors.NotFound, "mount point left behind");
    } finally {
      await Deno.remove(one, { recursive: true });
      await Deno.remove(two, { recursive: true });
    }
  },
});

Deno.test({
  name: "SftpTransport maps a full vessel disk to code no-space and leaves no temp file",
  ignore,
  fn: async () => {
    const small = await Deno.makeTempDir({ prefix: "cm-small-" });
    try {
      await withServer(() => startOpenSsh({ tmpfs: { [small]: 512 * 1024 } }), async (server) => {
        // Parts on the small disk: the upload itself runs out of space.
        const tight = server.vesselConfig({ tempDir: `${small}/tmp` });
        await withTransport(new SftpTransport(tight), async (transport) => {
          await transport.prepare("full1", `${small}/dest/a.bin`);
          const error = await rejection(transport.putPart("full1", 0, bytes(1 << 20, 1)));
          assert.equal(error.code, "no-space", error.message);
          assert.equal(error.retryable, true);
          assert.deepEqual([...await transport.listParts("full1")], []);
          await transport.removeParts("full1");
        });
        // Parts elsewhere, destination on the small disk: the remote cat runs out of space.
        await withTransport(new SftpTransport(server.vesselConfig()), async (transport) => {
          const destination = `${small}/dest/b.bin`;
          await transport.prepare("full2", destination);
          await transport.putPart("full2", 0, bytes(400 * 1024, 2));
          await transport.putPart("full2", 1, bytes(400 * 1024, 3));
          const error = await rejection(assembleAll(transport, "full2", 2, destination));
          assert.equal(error.code, "no-space", error.message);
          assert.match(error.message, /No space left on device/);
          assert.equal(await transport.hash(tempPathFor("full2", destination)), undefined);
          // Streamed: the cat into the temp file runs out of space.
          const assembly = transport.startAssembly("full2", 2, destination);
          await new Promise((resolve) => setTimeout(resolve, 100));
          assembly.partReady(0);
          assembly.partReady(1);
          const streamed = await rejection(assembly.finish());
          assert.equal(streamed.code, "no-space", streamed.message);
          assert.equal(await transport.hash(tempPathFor("full2", destination)), undefined);
          await transport.removeParts("full2");
          // Whole: the write itself runs out of space.
          const whole = await rejection(
            transport.putWhole("full3", `${small}/dest/c.bin`, bytes(1 << 20, 4)),
          );
          assert.equal(whole.code, "no-space", whole.message);
          assert.equal(
            await transport.hash(tempPathFor("full3", `${small}/dest/c.bin`)),
            undefined,
          );
          const tiny = await transport.putWhole("full4", `${small}/dest/d.bin`, bytes(100, 5));
          assert.equal(tiny.sha256, sha256(bytes(100, 5)));
        });
      });
    } finally {
      await Deno.remove(small, { recursive: true });
    }
  },
});

for (const [label, start] of [["OpenSSH", startOpenSsh], ["Dropbear", startDropbear]] as const) {
  for (const sshClient of ["openssh", "builtin"] as const) {
    Deno.test({
      name: `${label}, ${sshClient} client: small files hashed in batches by the resident ` +
        "hasher are stored and reported whole, in hostile directories too",
      ignore,
      fn: () =>
        withServer(start, async (server) => {
          const vessel = server.vesselConfig({ sshClient });
          // Batches on loopback too: the resident hasher, and a directory with a line break
          // (which it cannot read as a line) by a command of its own.
          const warnings: string[] = [];
          const log = { ...silentLogger, warn: (line: string) => void warnings.push(line) };
          const transport = new SftpTransport(vessel, { connections: 2, batchHashFromMs: 0, log });
          await withTransport(transport, async (transport) => {
            const dirs = [`${server.dir}/in/$(id) 'q'`, `${server.dir}/in/new\nline`];
            const files = Array.from({ length: 24 }, (_, index) => bytes(1000 + index * 97, index));
            for (const round of [0, 1]) {
              const assembled = await Promise.all(files.map((data, index) =>
                transport.putWhole(
                  `resident-${round}-${index}`,
                  `${dirs[index % 2]}/f${index}.bin`,
                  data,
                )
              ));
              for (const [index, data] of files.entries()) {
                assert.equal(assembled[index].sha256, sha256(data), `file ${index}`);
                assert.equal(sha256(await Deno.readFile(assembled[index].tempPath)), sha256(data));
              }
            }
            // A vessel that could not hash them would have had them read back, with a warning.
            assert.deepEqual(warnings, [], `the vessel's log: ${server.output()}`);
          });
        }),
    });
  }
}
