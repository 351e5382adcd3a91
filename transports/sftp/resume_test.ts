/**
 * Resuming a file cut mid-way (resume.ts), on both carriers, against a real
 * sshd behind the fault proxy: the bytes the proxy forwards on the second
 * try show what was sent again.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes as bytes, sha256 } from "../../tests/cli_harness.ts";
import type { FaultProxy } from "../../tests/fault_proxy.ts";
import { proxiedTransport } from "../../tests/proxied_transport.ts";
import {
  serverUnavailable,
  skipNotice,
  startOpenSsh,
  type TestServer,
} from "../../tests/servers.ts";
import { assembleAll, tempPathFor, type TransportError } from "../transport.ts";
import type { SshConnection } from "./connection.ts";
import { findSsh } from "./openssh_setup.ts";
import { putWholeFile } from "./put_whole.ts";
import { closeHandle, openHandle } from "./sftp_ops.ts";
import { SftpTransport } from "./sftp_transport.ts";

const MiB = 1 << 20;
/** The uid and gid of `nobody`, another user than the vessel's login user (root). */
const NOBODY = 65534;
const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("SFTP resume", unavailable);

/** A transport with one connection through a fresh proxy, its log lines, and cleanup. */
function through(server: TestServer, carrier: "builtin" | "openssh") {
  return proxiedTransport(server, { vessel: { sshClient: carrier } });
}

/** The byte the transport logged it resumed `name` at. */
function resumedAt(lines: string[], name: string): number {
  const line = lines.find((line) => line.includes(name) && line.startsWith("resuming"));
  const offset = Number(/ at byte (\d+) of /.exec(line ?? "")?.[1]);
  assert.ok(offset > 0, `no resume of ${name} logged: ${lines.join("\n")}`);
  return offset;
}

/** Runs `body` with a builtin-client transport to a new OpenSSH vessel, then stops both. */
async function withTransport(
  body: (server: TestServer, transport: SftpTransport) => Promise<void>,
): Promise<void> {
  const server = await startOpenSsh();
  const transport = new SftpTransport(server.vesselConfig({ sshClient: "builtin" }));
  try {
    await body(server, transport);
  } finally {
    await transport.close();
    await server.stop();
  }
}

/**
 * What a retry may send beyond the rest of the file: a new connection's
 * handshake, the check of the start, SFTP headers.
 */
const OVERHEAD = 256 * 1024;

/** Runs `put` once cut after `cutAt` bytes (rejects), then again; returns bytes sent by each. */
async function cutThenRetry(
  proxy: FaultProxy,
  transport: SftpTransport,
  cutAt: number,
  put: () => Promise<unknown>,
): Promise<{ first: number; second: number }> {
  await transport.hash("/nonexistent"); // Connects: the cut counts from the file's first byte.
  const before = proxy.bytes.up + proxy.bytes.down;
  proxy.cutAfter({ minBytes: cutAt, maxBytes: cutAt, mode: "fin" });
  await assert.rejects(put(), (error: TransportError) => error.code === "connection");
  proxy.clear();
  const first = proxy.bytes.up - before;
  const cut = proxy.bytes.up;
  await put();
  return { first, second: proxy.bytes.up - cut };
}

for (const carrier of ["builtin", "openssh"] as const) {
  const ignore = unavailable !== undefined || (carrier === "openssh" && !findSsh());

  Deno.test({
    name:
      `${carrier} carrier: a one-part file cut mid-way resumes from what the vessel holds, sending only the rest`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const server = await startOpenSsh();
      const { proxy, transport, lines, close } = await through(server, carrier);
      try {
        const destination = `${server.dir}/inbox/whole.bin`;
        const data = bytes(8 * MiB, 7);
        const { second } = await cutThenRetry(
          proxy,
          transport,
          6 * MiB,
          () => transport.putWhole("resume1", destination, data),
        );
        const stored = await Deno.readFile(tempPathFor("resume1", destination));
        assert.equal(sha256(stored), sha256(data), "the file on the vessel");
        // The vessel keeps what sshd passed on before the cut (up to a channel window less
        // than the proxy forwarded); the retry sends only what it lacks.
        const offset = resumedAt(lines, "resume1.tmp");
        assert.ok(offset >= 2 * MiB, `resumed at ${offset}`);
        assert.ok(
          second <= data.byteLength - offset + OVERHEAD,
          `second try sent ${second} bytes, resuming at ${offset}`,
        );
      } finally {
        await close();
        await server.stop();
      }
    },
  });

  Deno.test({
    name: `${carrier} carrier: a part cut mid-way resumes; a left file that differs is replaced`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const server = await startOpenSsh();
      const { proxy, transport, lines, close } = await through(server, carrier);
      try {
        const destination = `${server.dir}/inbox/parts.bin`;
        const data = bytes(6 * MiB, 8);
        await transport.prepare("resume2", destination);
        const { second } = await cutThenRetry(
          proxy,
          transport,
          5 * MiB,
          () => transport.putPart("resume2", 0, data),
        );
        const offset = resumedAt(lines, "0.part.tmp");
        assert.ok(offset >= MiB, `resumed at ${offset}`);
        assert.ok(
          second <= data.byteLength - offset + OVERHEAD,
          `second try sent ${second} bytes, resuming at ${offset}`,
        );
        assert.deepEqual([...await transport.listParts("resume2")], [0]);
        const assembled = await assembleAll(transport, "resume2", 1, destination);
        assert.equal(assembled.sha256, sha256(data));
        await transport.remove(assembled.tempPath);
        await transport.removeParts("resume2");

        // A file with other bytes at the temp name (another version of the source): the
        // vessel's hash of its start differs, so it is written from byte 0.
        const other = `${server.dir}/inbox/other.bin`;
        const temp = tempPathFor("resume3", other);
        await Deno.writeFile(temp, bytes(2 * MiB, 9), { mode: 0o600 });
        const sent = proxy.bytes.up;
        const whole = await transport.putWhole("resume3", other, data);
        assert.equal(whole.sha256, sha256(data));
        assert.ok(proxy.bytes.up - sent >= data.byteLength, "the differing file was resumed");
      } finally {
        await close();
        await server.stop();
      }
    },
  });
}

Deno.test({
  name:
    "a file left beside the destination is not resumed through a link swapped in after its check",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTransport(async (server, transport) => {
      const destination = `${server.dir}/inbox/shared.bin`;
      const temp = tempPathFor("swapped", destination);
      const data = bytes(MiB, 11);
      await Deno.mkdir(`${server.dir}/inbox`, { recursive: true });
      // What a try cut mid-way left, and a private file of the login user beside it.
      await Deno.writeFile(temp, data.subarray(0, 768 * 1024), { mode: 0o600 });
      const precious = `${server.dir}/precious`;
      await Deno.writeTextFile(precious, "precious!!", { mode: 0o600 });
      const put = (connection: SshConnection) =>
        putWholeFile(connection, temp, data, {
          fsync: false,
          deadline: () => 60_000,
          makeDirectory: () => Promise.resolve(),
          // The check passes on the file left there; then a user who can write the directory
          // renames a link to the precious file over it.
          resume: async () => {
            await Deno.symlink(precious, `${temp}.link`);
            await Deno.rename(`${temp}.link`, temp);
            return 768 * 1024;
          },
        });
      const stored = await transport.connections.run("put a file", put);
      assert.equal(await Deno.readTextFile(precious), "precious!!", "written through the link");
      assert.equal(stored.sha256, sha256(data));
      assert.ok((await Deno.lstat(temp)).isFile, "written from byte 0 as a new file");
      assert.equal(sha256(await Deno.readFile(temp)), sha256(data));
    }),
});

Deno.test({
  name:
    "a file another user planted at a one-part file's temp name is not resumed: none of the file's bytes reach it",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTransport(async (server, transport) => {
      const destination = `${server.dir}/inbox/disk.img`;
      const temp = tempPathFor("planted", destination);
      const data = bytes(MiB, 12);
      await Deno.mkdir(`${server.dir}/inbox`, { recursive: true, mode: 0o1777 });
      // A user who can write the directory guesses the next temp name (the instance id shows
      // in earlier ones, delivery ids count up) and the file's start (a known header), plants
      // a file of theirs there that all may write, and keeps a link to it.
      const prefix = data.subarray(0, 128 * 1024);
      await Deno.writeFile(temp, prefix);
      await Deno.chmod(temp, 0o666);
      await Deno.chown(temp, NOBODY, NOBODY);
      const theirs = `${server.dir}/theirs`;
      await Deno.link(temp, theirs);

      const stored = await transport.putWhole("planted", destination, data);

      assert.equal(stored.sha256, sha256(data));
      assert.equal(sha256(await Deno.readFile(theirs)), sha256(prefix), "their file got our bytes");
      const info = await Deno.lstat(temp);
      assert.equal(info.uid, 0, "the temp file is the login user's");
      assert.equal(info.mode! & 0o7777, 0o600, "the temp file is private");
      assert.equal(sha256(await Deno.readFile(temp)), sha256(data));
    }),
});

Deno.test({
  name:
    "a one-part file resumed over an older version's temp file is published whole although that try's late writes land after it",
  ignore: unavailable !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await startOpenSsh();
    const vessel = server.vesselConfig({ sshClient: "builtin" });
    // The earlier try's connection: the shore gave up on it (a stalled link), but the
    // vessel's SFTP server still holds its handle, and writes that were stuck on the way
    // reach it later.
    const earlier = new SftpTransport(vessel, { connections: 1 });
    const lines: string[] = [];
    const log = {
      error: () => {},
      warn: () => {},
      debug: () => {},
      info: (line: string) => lines.push(line),
    };
    const transport = new SftpTransport(vessel, { connections: 1, log });
    try {
      const destination = `${server.dir}/inbox/table.db`;
      const temp = tempPathFor("versions", destination);
      const KiB = 1024;
      // Version A, then B, changed in place between 256 and 320 KiB.
      const older = bytes(512 * KiB, 13);
      const newer = older.slice();
      newer.set(bytes(64 * KiB, 14), 256 * KiB);
      await Deno.mkdir(`${server.dir}/inbox`, { recursive: true });
      await earlier.connections.run("play the earlier try", async (connection) => {
        const handle = await openHandle(connection, temp, "wx");
        await connection.writeAll(handle, older.subarray(0, 192 * KiB));

        // The next try sends version B: the vessel holds a start common to both.
        const stored = await transport.putWhole("versions", destination, newer);
        assert.equal(stored.sha256, sha256(newer), "verified before it is published");
        await transport.publish(stored.tempPath, destination);

        // The earlier try's stuck write of version A lands.
        const late = Buffer.from(older.buffer, older.byteOffset, older.byteLength);
        await connection.write(handle, late, 256 * KiB, 64 * KiB, 256 * KiB);
        await closeHandle(connection, handle);
      });
      assert.equal(resumedAt(lines, "versions.tmp"), 192 * KiB, "the start both versions share");
      assert.equal(
        sha256(await Deno.readFile(destination)),
        sha256(newer),
        "the published file mixes versions",
      );
    } finally {
      await earlier.close();
      await transport.close();
      await server.stop();
    }
  },
});
