/**
 * Tests of the fault-injecting proxy against real TCP servers on 127.0.0.1
 * (an echo server and a sink started here, and OpenSSH when installed),
 * with real `Deno.connect` clients.
 */
import assert from "node:assert/strict";
import { FaultProxy, mulberry32 } from "./fault_proxy.ts";
import { logger } from "../src/log/logger.ts";

const SEED = 20240601;

/** A TCP server on 127.0.0.1 that runs `handle` for each connection. */
interface TestServer {
  port: number;
  accepted: number;
  close(): Promise<void>;
}

function startServer(handle: (conn: Deno.TcpConn) => Promise<void>): TestServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const server = {
    port: listener.addr.port,
    accepted: 0,
    async close() {
      listener.close();
      for (const conn of conns) closeQuietly(conn);
      await loop;
      await Promise.all(tasks);
    },
  };
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        // A connection reset while still queued fails accept() itself with
        // NotConnected or ConnectionReset; the listener goes on working.
        if (error instanceof Deno.errors.BadResource) return; // listener closed
        continue;
      }
      {
        server.accepted++;
        conn.setNoDelay(true);
        conns.add(conn);
        const task = handle(conn).catch(() => {}).finally(() => {
          conns.delete(conn);
          closeQuietly(conn);
          tasks.delete(task);
        });
        tasks.add(task);
      }
    }
  })();
  return server;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Sends back everything it reads; half-closes when the client does. */
async function echo(conn: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(65536);
  for (let n; (n = await conn.read(buffer)) !== null;) await writeAll(conn, buffer.subarray(0, n));
  await conn.closeWrite();
}

/** Reads until EOF, then answers with the byte count in decimal and `extra` bytes of pattern. */
function sink(extra = 0): (conn: Deno.TcpConn) => Promise<void> {
  return async (conn) => {
    const buffer = new Uint8Array(65536);
    let total = 0;
    for (let n; (n = await conn.read(buffer)) !== null;) total += n;
    await writeAll(conn, extra > 0 ? pattern(extra) : new TextEncoder().encode(String(total)));
  };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let offset = 0; offset < data.length;) offset += await conn.write(data.subarray(offset));
}

/** Bytes that reveal a shifted, missing or repeated chunk (251 is prime). */
function pattern(length: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = i % 251;
  return data;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads a connection in the background until EOF or an error. */
class Reader {
  readonly chunks: Uint8Array[] = [];
  total = 0;
  eof = false;
  error: unknown;
  readonly done: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.done = this.#run(conn);
  }

  async #run(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      for (let n; (n = await conn.read(buffer)) !== null;) {
        this.chunks.push(buffer.slice(0, n));
        this.total += n;
      }
      this.eof = true;
    } catch (error) {
      this.error = error;
    }
  }

  bytes(): Uint8Array {
    const data = new Uint8Array(this.total);
    let offset = 0;
    for (const chunk of this.chunks) {
      data.set(chunk, offset);
      offset += chunk.length;
    }
    return data;
  }

  /** Waits until `total` bytes were read; fails after `timeoutMs`. */
  async waitFor(total: number, timeoutMs = 5000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.total < total) {
      if (this.eof || this.error !== undefined || performance.now() > deadline) {
        throw new Error(
          `Cannot read ${total} bytes: got ${this.total} (eof ${this.eof}, error ${this.error})`,
        );
      }
      await delay(5);
    }
  }
}

async function connect(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  return conn;
}

/** Runs `body` with a server running `handle` behind a fresh proxy; closes both. */
async function withProxy(
  handle: (conn: Deno.TcpConn) => Promise<void>,
  body: (proxy: FaultProxy, server: TestServer) => Promise<void>,
  seed = SEED,
): Promise<void> {
  const server = startServer(handle);
  const proxy = await FaultProxy.start({
    target: { hostname: "127.0.0.1", port: server.port },
    seed,
  });
  try {
    await body(proxy, server);
  } finally {
    await proxy.close();
    await server.close();
  }
}

/** Writes `length` bytes of pattern through an echo while reading; returns when reading stops. */
async function blast(port: number, length: number): Promise<Reader> {
  const conn = await connect(port);
  const reader = new Reader(conn);
  const writer = writeAll(conn, pattern(length)).catch(() => {});
  await reader.done;
  closeQuietly(conn);
  await writer;
  return reader;
}

/** Connects and asserts the connection is reset, at connect or at the first read. */
async function resetOnConnectOrRead(port: number): Promise<void> {
  let conn: Deno.TcpConn;
  try {
    conn = await connect(port);
  } catch (error) {
    assert.ok(error instanceof Deno.errors.ConnectionReset, `${error}`);
    return;
  }
  const reader = new Reader(conn);
  await reader.done;
  conn.close();
  assert.ok(reader.error instanceof Deno.errors.ConnectionReset, `${reader.error}`);
}

async function roundTrip(conn: Deno.Conn, reader: Reader): Promise<number> {
  const start = performance.now();
  await writeAll(conn, new Uint8Array([1]));
  await reader.waitFor(reader.total + 1);
  return performance.now() - start;
}

Deno.test("mulberry32() repeats its sequence for a seed", () => {
  const a = mulberry32(7);
  const b = mulberry32(7);
  const values = Array.from({ length: 5 }, () => a());
  assert.deepEqual(values, Array.from({ length: 5 }, () => b()));
  assert.ok(values.every((value) => value >= 0 && value < 1));
  assert.notDeepEqual(values, Array.from({ length: 5 }, mulberry32(8)));
});

Deno.test("FaultProxy counts bytes per direction and forwards half-closes", async () => {
  await withProxy(sink(123_457), async (proxy) => {
    const conn = await connect(proxy.port);
    const reader = new Reader(conn);
    await writeAll(conn, pattern(300_001));
    await conn.closeWrite();
    await reader.done;
    conn.close();
    assert.equal(reader.error, undefined);
    assert.ok(reader.eof);
    assert.deepEqual(reader.bytes(), pattern(123_457));
    assert.deepEqual(proxy.bytes, { up: 300_001, down: 123_457 });
    assert.equal(proxy.connections(), 1);
    // Both sides closed: the proxy lets go of the connection by itself.
    for (let i = 0; proxy.openConnections() > 0; i++) {
      assert.ok(i < 200, "the proxy still holds the closed connection");
      await delay(10);
    }
  });
});

Deno.test("FaultProxy.cutAfter() with rst resets within the range, reproducibly", async () => {
  const range = { minBytes: 20_000, maxBytes: 40_000, mode: "rst" } as const;
  const cutAt: number[] = [];
  for (let run = 0; run < 2; run++) {
    await withProxy(echo, async (proxy) => {
      proxy.cutAfter(range);
      const reader = await blast(proxy.port, 1024 * 1024);
      assert.ok(
        reader.error instanceof Deno.errors.ConnectionReset,
        `expected a reset, got ${reader.error}`,
      );
      const forwarded = proxy.bytes.up + proxy.bytes.down;
      assert.ok(forwarded >= range.minBytes && forwarded <= range.maxBytes, `${forwarded}`);
      assert.ok(reader.total <= proxy.bytes.down);
      assert.deepEqual(reader.bytes(), pattern(reader.total));
      cutAt.push(forwarded);

      // The next connection draws its own budget and works below it.
      const conn = await connect(proxy.port);
      const next = new Reader(conn);
      await writeAll(conn, pattern(5000));
      await next.waitFor(5000);
      assert.deepEqual(next.bytes(), pattern(5000));
      conn.close();
      await next.done;
      assert.equal(proxy.connections(), 2);
    });
  }
  assert.equal(cutAt[0], cutAt[1], "the same seed cuts at the same byte");
});

Deno.test("FaultProxy.cutAfter() with fin ends the client's stream cleanly", async () => {
  await withProxy(echo, async (proxy) => {
    proxy.cutAfter({ minBytes: 50_000, maxBytes: 60_000, mode: "fin" });
    const reader = await blast(proxy.port, 1024 * 1024);
    assert.equal(reader.error, undefined);
    assert.ok(reader.eof);
    assert.equal(reader.total, proxy.bytes.down, "every forwarded byte arrives before the EOF");
    assert.deepEqual(reader.bytes(), pattern(reader.total));
    const forwarded = proxy.bytes.up + proxy.bytes.down;
    assert.ok(forwarded >= 50_000 && forwarded <= 60_000, `${forwarded}`);
  });
});

Deno.test("FaultProxy.cutAll() resets with rst (ECONNRESET) and closes with fin (EOF)", async () => {
  await withProxy(echo, async (proxy, server) => {
    const conns = [await connect(proxy.port), await connect(proxy.port)];
    const readers = conns.map((conn) => new Reader(conn));
    for (const [i, conn] of conns.entries()) {
      await writeAll(conn, pattern(10));
      await readers[i].waitFor(10);
    }
    proxy.cutAll("rst");
    await readers[0].done;
    assert.ok(readers[0].error instanceof Deno.errors.ConnectionReset, `${readers[0].error}`);
    await readers[1].done;
    assert.ok(readers[1].error instanceof Deno.errors.ConnectionReset, `${readers[1].error}`);

    const conn = await connect(proxy.port);
    const reader = new Reader(conn);
    await writeAll(conn, pattern(10));
    await reader.waitFor(10);
    proxy.cutAll("fin");
    await reader.done;
    assert.equal(reader.error, undefined);
    assert.ok(reader.eof);
    for (const each of [...conns, conn]) each.close();
    assert.equal(server.accepted, 3);
  });
});

Deno.test("FaultProxy.stall() holds data both ways and resume() delivers all of it", async () => {
  await withProxy(echo, async (proxy) => {
    const conn = await connect(proxy.port);
    const reader = new Reader(conn);
    await writeAll(conn, pattern(1000));
    await reader.waitFor(1000);
    proxy.stall();
    const data = pattern(201_000);
    await writeAll(conn, data.subarray(1000));
    await delay(300);
    assert.equal(reader.total, 1000);
    assert.deepEqual(proxy.bytes, { up: 1000, down: 1000 });
    proxy.resume();
    await reader.waitFor(201_000);
    assert.deepEqual(reader.bytes(), data);
    assert.equal(reader.error, undefined);
    conn.close();
    await reader.done;
  });
});

Deno.test("FaultProxy.throttle() caps the throughput, throttle(undefined) lifts it", async () => {
  await withProxy(sink(), async (proxy) => {
    const send = async (length: number) => {
      const start = performance.now();
      const conn = await connect(proxy.port);
      const reader = new Reader(conn);
      await writeAll(conn, pattern(length));
      await conn.closeWrite();
      await reader.done;
      conn.close();
      assert.equal(new TextDecoder().decode(reader.bytes()), String(length));
      return performance.now() - start;
    };
    proxy.throttle(1024 * 1024);
    const throttled = await send(2 * 1024 * 1024);
    assert.ok(throttled >= 1500 && throttled < 10_000, `2 MiB at 1 MiB/s took ${throttled} ms`);
    proxy.throttle(undefined);
    const free = await send(2 * 1024 * 1024);
    assert.ok(free < 1500, `2 MiB unthrottled took ${free} ms`);
  });
});

Deno.test("FaultProxy.latency() delays each direction", async () => {
  await withProxy(echo, async (proxy) => {
    const conn = await connect(proxy.port);
    const reader = new Reader(conn);
    await roundTrip(conn, reader);
    proxy.latency(100);
    const slow = await roundTrip(conn, reader);
    assert.ok(slow >= 195, `round trip with 100 ms each way took ${slow} ms`);
    proxy.latency(undefined);
    const fast = await roundTrip(conn, reader);
    assert.ok(fast < 100, `round trip without latency took ${fast} ms`);
    conn.close();
    await reader.done;
  });
});

Deno.test("FaultProxy.refuse() resets connections and accepts again when off", async () => {
  await withProxy(echo, async (proxy, server) => {
    const open = await connect(proxy.port);
    const openReader = new Reader(open);
    await writeAll(open, pattern(10));
    await openReader.waitFor(10);

    proxy.refuse(true);
    await openReader.done;
    assert.ok(openReader.error instanceof Deno.errors.ConnectionReset, `${openReader.error}`);
    // The reset may beat Deno.connect() (which reads the socket's addresses
    // after connecting) or reach the first read.
    await resetOnConnectOrRead(proxy.port);
    assert.equal(server.accepted, 1, "a refused connection never reaches the server");

    proxy.refuse(false);
    const again = await connect(proxy.port);
    const againReader = new Reader(again);
    await writeAll(again, pattern(10));
    await againReader.waitFor(10);
    for (const conn of [open, again]) conn.close();
    await againReader.done;
    assert.equal(server.accepted, 2);
    assert.equal(proxy.connections(), 3);
  });
});

Deno.test("FaultProxy.close() closes every connection and stops listening", async () => {
  const server = startServer(echo);
  const proxy = await FaultProxy.start({ target: { hostname: "127.0.0.1", port: server.port } });
  const conns: Deno.TcpConn[] = [];
  const readers: Reader[] = [];
  for (let i = 0; i < 3; i++) {
    conns.push(await connect(proxy.port));
    readers.push(new Reader(conns[i]));
    await writeAll(conns[i], pattern(10));
    await readers[i].waitFor(10);
  }
  // One connection waits on latency, one on the throttle, one is stalled.
  proxy.latency(10_000);
  await writeAll(conns[0], pattern(1000));
  proxy.latency(undefined);
  proxy.throttle(1000);
  await writeAll(conns[1], pattern(100_000));
  proxy.stall();
  await writeAll(conns[2], pattern(1000));
  await delay(100);
  assert.equal(proxy.openConnections(), 3);

  await proxy.close();
  assert.equal(proxy.openConnections(), 0);
  await Promise.all(readers.map((reader) => reader.done));
  await assert.rejects(connect(proxy.port), Deno.errors.ConnectionRefused);
  for (const conn of conns) conn.close();
  await server.close();
});

const SSHD = "/usr/sbin/sshd";
const hasSshd = await Deno.stat(SSHD).then(() => true, () => false);
if (!hasSshd) logger("fault proxy test").warn(`skipping the OpenSSH test: ${SSHD} not found`);

Deno.test({
  name: "FaultProxy forwards an SSH handshake to a real OpenSSH server (ssh-keyscan)",
  ignore: !hasSshd,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fault_proxy_sshd_" });
    let sshd: Deno.ChildProcess | undefined;
    let proxy: FaultProxy | undefined;
    try {
      const keygen = await new Deno.Command("ssh-keygen", {
        args: ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`],
        stdout: "null",
      }).output();
      assert.ok(keygen.success, new TextDecoder().decode(keygen.stderr));
      const hostKey = (await Deno.readTextFile(`${dir}/host_key.pub`)).split(" ").slice(0, 2);
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = probe.addr.port;
      probe.close();
      await Deno.writeTextFile(
        `${dir}/sshd_config`,
        [
          `Port ${port}`,
          "ListenAddress 127.0.0.1",
          `HostKey ${dir}/host_key`,
          "PidFile none",
          "UsePAM no",
          "StrictModes no",
          "",
        ].join("\n"),
      );
      // As root, sshd wants /run/sshd for privilege separation; as another
      // user it needs none, so drop to nobody instead of touching /run.
      const sshdArgs = ["-D", "-e", "-f", `${dir}/sshd_config`];
      let command = new Deno.Command(SSHD, { args: sshdArgs, stdout: "null", stderr: "null" });
      if (Deno.uid() === 0) {
        for (const path of [dir, `${dir}/host_key`, `${dir}/sshd_config`]) {
          await Deno.chown(path, 65534, 65534);
        }
        command = new Deno.Command("setpriv", {
          args: ["--reuid=65534", "--regid=65534", "--clear-groups", SSHD, ...sshdArgs],
          stdout: "null",
          stderr: "null",
        });
      }
      sshd = command.spawn();
      for (let attempt = 0;; attempt++) {
        try {
          (await connect(port)).close();
          break;
        } catch (error) {
          if (attempt > 100) throw new Error(`Cannot reach sshd on port ${port}`, { cause: error });
          await delay(50);
        }
      }
      proxy = await FaultProxy.start({ target: { hostname: "127.0.0.1", port } });
      const scan = await new Deno.Command("ssh-keyscan", {
        args: ["-T", "5", "-t", "ed25519", "-p", String(proxy.port), "127.0.0.1"],
        stderr: "null",
      }).output();
      const line = new TextDecoder().decode(scan.stdout).trim();
      assert.equal(line, `[127.0.0.1]:${proxy.port} ${hostKey.join(" ")}`);
      assert.ok(proxy.bytes.up > 0 && proxy.bytes.down > 0);
    } finally {
      await proxy?.close();
      if (sshd) {
        sshd.kill("SIGTERM");
        await sshd.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});
