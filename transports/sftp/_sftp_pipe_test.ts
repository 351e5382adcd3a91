/** SFTP over pipes against OpenSSH's real sftp-server, run as a child without ssh. */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { PassThrough } from "node:stream";
import { createHash } from "node:crypto";
import { sftpOverPipes } from "./_sftp_pipe.ts";
import type { SFTPWrapper } from "./_ssh2.ts";

const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
const ignore = !(await Deno.stat(SFTP_SERVER).then(() => true, () => false));

/** A local sftp-server, and the chunks written into its stdin, as they were written. */
function startSftpServer() {
  const child = spawn(SFTP_SERVER, [], { stdio: ["pipe", "pipe", "inherit"] });
  const input = child.stdin!;
  const written: Uint8Array[] = [];
  const write = input.write.bind(input) as (chunk: Uint8Array) => boolean;
  input.write = ((chunk: Uint8Array) => {
    written.push(chunk);
    return write(chunk);
  }) as typeof input.write;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return { input, output: child.stdout!, written, exited };
}

/** Runs `work` on an SFTP session with a local sftp-server, counting writes into its stdin. */
async function withSftpServer(
  work: (sftp: SFTPWrapper, dir: string, writes: () => number) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-pipe-" });
  const { input, output, written, exited } = startSftpServer();
  try {
    const { sftp, answered } = sftpOverPipes(input, output, () => input.end());
    await answered;
    await work(sftp, dir, () => written.length);
    sftp.end();
  } finally {
    input.end();
    await exited;
    await Deno.remove(dir, { recursive: true });
  }
}

function call<T>(start: (done: (error: Error | null | undefined, value?: T) => void) => void) {
  return new Promise<T>((resolve, reject) =>
    start((error, value) => error ? reject(error) : resolve(value as T))
  );
}

Deno.test({
  name: "sftpOverPipes() sends the small requests of one turn in one write, in order",
  ignore,
  async fn() {
    await withSftpServer(async (sftp, dir, writes) => {
      for (let i = 0; i < 30; i++) await Deno.writeTextFile(`${dir}/f${i}`, "x".repeat(i));
      const before = writes();
      const sizes = await Promise.all(
        Array.from(
          { length: 30 },
          (_, i) =>
            call<{ size: number }>((done) => sftp.stat(`${dir}/f${i}`, done)).then((s) => s.size),
        ),
      );
      assert.deepEqual(sizes, Array.from({ length: 30 }, (_, i) => i));
      assert.equal(writes() - before, 1, "30 stat requests made in one turn: one write");

      // A rename sent right after the writes of a file is handled after them.
      const handle = await call<Buffer>((done) => sftp.open(`${dir}/new.tmp`, "w", done));
      const data = Buffer.from("hello, vessel");
      const wrote = call<void>((done) => sftp.write(handle, data, 0, data.length, 0, done));
      const closed = call<void>((done) => sftp.close(handle, done));
      const renamed = call<void>((done) => sftp.rename(`${dir}/new.tmp`, `${dir}/new`, done));
      await Promise.all([wrote, closed, renamed]);
      assert.equal(await Deno.readTextFile(`${dir}/new`), "hello, vessel");
    });
  },
});

Deno.test({
  name: "sftpOverPipes() writes large requests whole and unjoined",
  ignore,
  async fn() {
    await withSftpServer(async (sftp, dir, writes) => {
      const data = Buffer.alloc(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 11)) & 0xff;
      const handle = await call<Buffer>((done) => sftp.open(`${dir}/big`, "w", done));
      const before = writes();
      const chunk = 256 << 10;
      await Promise.all(
        Array.from(
          { length: 4 },
          (_, i) =>
            call<void>((done) => sftp.write(handle, data, i * chunk, chunk, i * chunk, done)),
        ),
      );
      assert.ok(writes() - before >= 4, "each 256 KiB request is its own write");
      await call<void>((done) => sftp.close(handle, done));
      const stored = await Deno.readFile(`${dir}/big`);
      assert.equal(
        createHash("sha256").update(stored).digest("hex"),
        createHash("sha256").update(data).digest("hex"),
      );
    });
  },
});

Deno.test({
  name: "sftpOverPipes() is ready at the server's VERSION, before its limits are answered",
  ignore,
  async fn() {
    const { input, output, exited } = startSftpServer();
    // The server's first reply (its VERSION) goes through; the next (the limits@openssh.com
    // answer) waits, as it does for a round trip on a long link.
    const replies = new PassThrough();
    const held: Buffer[] = [];
    let holding = false;
    output.on("data", (chunk: Buffer) => {
      if (holding) held.push(chunk);
      else {
        replies.write(chunk);
        holding = true;
      }
    });
    try {
      const timeout = new Promise<"waited">((resolve) => setTimeout(() => resolve("waited"), 3000));
      const { sftp, answered } = sftpOverPipes(input, replies, () => input.end());
      const first = await Promise.race([answered, timeout]);
      assert.notEqual(first, "waited", "the session waited for the limits' answer");
      // A request made now is answered once the held limits' answer has gone through.
      const stat = call<{ isDirectory(): boolean }>((done) => sftp.stat("/", done));
      for (const chunk of held) replies.write(chunk);
      holding = false;
      output.removeAllListeners("data");
      output.pipe(replies);
      assert.ok((await stat).isDirectory());
      const writeLength = (sftp as unknown as { _maxWriteLen: number })._maxWriteLen;
      assert.ok(writeLength > 34000, `writes stay at ${writeLength} bytes: limits not applied`);
      sftp.end();
    } finally {
      input.end();
      await exited;
    }
  },
});

Deno.test({
  name: "sftpOverPipes() sends a request made at once behind the INIT, before the server's VERSION",
  ignore,
  async fn() {
    const { input, output, written, exited } = startSftpServer();
    const replies = new PassThrough(); // nothing the server says gets through yet
    try {
      const { sftp, answered } = sftpOverPipes(input, replies, () => input.end());
      const stat = call<{ isDirectory(): boolean }>((done) => sftp.stat("/", done));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(packetTypes(written), [1, 17], "INIT, then STAT, with no VERSION heard");
      output.pipe(replies);
      await answered;
      assert.ok((await stat).isDirectory());
      sftp.end();
    } finally {
      input.end();
      await exited;
    }
  },
});

/** The types of the SFTP packets in `chunks`, in order. */
function packetTypes(chunks: readonly Uint8Array[]): number[] {
  const types: number[] = [];
  for (const chunk of chunks) {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let at = 0; at + 5 <= chunk.byteLength; at += 4 + view.getUint32(at)) {
      types.push(chunk[at + 4]);
    }
  }
  return types;
}
