/**
 * Round trips per call on a long link, against a real sshd behind the fault
 * proxy with 200 ms each way: on a satellite link every round trip at the
 * end of a file costs more than sending a part.
 */
import assert from "node:assert/strict";
import { randomBytes as bytes, sha256, waitFor } from "../../tests/cli_harness.ts";
import { proxiedTransport } from "../../tests/proxied_transport.ts";
import {
  serverUnavailable,
  skipNotice,
  startOpenSsh,
  type TestServer,
} from "../../tests/servers.ts";
import type { Assembled } from "../transport.ts";
import { SftpTransport } from "./sftp_transport.ts";
import { writeFile } from "./sftp_ops.ts";
import { LONG_ROUND_TRIP_MS } from "./slow_start.ts";

const ONE_WAY_MS = 200;
const unavailable = serverUnavailable("openssh");
if (unavailable) skipNotice("SFTP round trips", unavailable);

type Proxied = Awaited<ReturnType<typeof proxiedTransport>> & { server: TestServer };

/** Runs `body` on a transport with one connection to a new sshd through the fault proxy. */
async function behindProxy(
  body: (proxied: Proxied) => Promise<void>,
  options?: Parameters<typeof proxiedTransport>[1],
): Promise<void> {
  const server = await startOpenSsh();
  // These count a long link's round trips, on a link made long once logged in: its files and
  // renames are flushed as on a long link, not together as on the short one it started as.
  const proxied = await proxiedTransport(server, { flushTogetherBelowMs: 0, ...options });
  try {
    await body({ ...proxied, server });
  } finally {
    await proxied.close();
    await server.stop();
  }
}

/** Once logged in, makes the link long and returns its round trip as one SFTP request sees it. */
async function lengthen(proxied: Proxied): Promise<number> {
  proxied.proxy.latency(ONE_WAY_MS);
  const started = performance.now();
  await proxied.transport.listParts("absent"); // fails at once: one request, one answer
  const roundTrip = performance.now() - started;
  assert.ok(roundTrip >= 2 * ONE_WAY_MS, `a round trip took ${roundTrip} ms`);
  return roundTrip;
}

/**
 * Writes 256 KiB on each of `connections` connections while the link is short: a new
 * connection leaves 16 KiB of writes unanswered until answers show the link carries more,
 * as TCP's first window would on a real long link (which this proxy's latency has not), so
 * a first file there would take round trips that are not the protocol's.
 */
async function warmUp({ transport, server }: Proxied, connections: number): Promise<void> {
  // Each call holds its connection until all have one, so no two share one.
  let started = 0;
  const all = Promise.withResolvers<void>();
  await Promise.all(
    Array.from(
      { length: connections },
      (_, i) =>
        transport.connections.run("warm up", async (connection) => {
          if (++started === connections) all.resolve();
          await all.promise;
          await writeFile(connection, `${server.dir}/warm-${i}.bin`, bytes(256 * 1024, 5));
        }),
    ),
  );
}

/**
 * Puts a small file whole at `destination`, hashed by the vessel's resident hasher, and
 * asserts it took three round trips: the create, the writes with the close, the hash.
 */
async function putSmallInThreeRoundTrips(
  { transport }: Proxied,
  destination: string,
  roundTrip: number,
): Promise<void> {
  const data = bytes(60_000, 9);
  const started = performance.now();
  const assembled = await transport.putWhole("far", destination, data);
  const took = performance.now() - started;
  assert.ok(
    took < 3.6 * roundTrip,
    `a small file took ${took.toFixed(0)} ms, ${(took / roundTrip).toFixed(1)} round trips`,
  );
  assert.equal(assembled.sha256, sha256(data));
  assert.deepEqual(await Deno.readFile(assembled.tempPath), data);
}

/**
 * Publishes `tempPath` (written with mode 0640) as `destination` and asserts it took one
 * round trip: the rename and the directory's fsync leave together when the directory was
 * opened ahead; opening it only now is a round trip more, before the fsync.
 */
async function publishInOneRoundTrip(
  { transport }: Proxied,
  tempPath: string,
  destination: string,
  roundTrip: number,
): Promise<void> {
  const started = performance.now();
  await transport.publish(tempPath, destination);
  const took = performance.now() - started;
  assert.ok(
    took < 1.5 * roundTrip,
    `publishing took ${took.toFixed(0)} ms, ${(took / roundTrip).toFixed(1)} round trips`,
  );
  assert.equal((await Deno.stat(destination)).mode! & 0o777, 0o640);
}

/** Sends `parts` one after the other, each announced to the assembly as it is whole. */
async function assembleParts(
  transport: SftpTransport,
  key: string,
  destination: string,
  parts: readonly Uint8Array[],
  mode?: number,
): Promise<Assembled> {
  const assembly = transport.startAssembly(key, parts.length, destination, mode);
  for (const [index, part] of parts.entries()) {
    await transport.putPart(key, index, part);
    assembly.partReady(index);
  }
  return await assembly.finish();
}

Deno.test({
  name: "a part's close and rename leave behind its last write: two round trips per part",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async (proxied) => {
      const { transport, vessel, server } = proxied;
      await transport.prepare("far", `${server.dir}/inbox/far.bin`); // logs in on a short link
      await warmUp(proxied, 1);
      const roundTrip = await lengthen(proxied);
      const part = bytes(64 * 1024, 7);
      const started = performance.now();
      await transport.putPart("far", 0, part);
      const took = performance.now() - started;
      // The open, then the writes with the close and the rename: two. Waiting for the writes'
      // answers before the close is a third.
      assert.ok(
        took < 2.5 * roundTrip,
        `a part took ${took.toFixed(0)} ms, ${(took / roundTrip).toFixed(1)} round trips`,
      );
      assert.deepEqual(await transport.listParts("far"), new Set([0]));
      assert.deepEqual(await Deno.readFile(`${vessel.tempDir}/far/0.part`), part);
    }),
});

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: a small file on a long link is hashed by the vessel's resident hasher in one round trip`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, server } = proxied;
        const first = bytes(60_000, 8);
        await transport.putWhole("near", `${server.dir}/inbox/near.bin`, first); // starts it
        const roundTrip = await lengthen(proxied);
        // A command per batch opens a session first: two or three round trips more.
        await putSmallInThreeRoundTrips(proxied, `${server.dir}/inbox/far.bin`, roundTrip);
      }, { vessel: { sshClient }, batchHashFromMs: 0 }),
  });
}

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: a small file on a long link takes three round trips with no hasher running yet: ` +
      "its connection's hasher starts beside the writes, and hashes it",
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, server } = proxied;
        // Two connections up on the short link, neither running a hasher (a daemon's, after
        // a pause of a few seconds): the one that is not writing would start its own.
        await transport.prepare("near", `${server.dir}/inbox/near.bin`);
        await waitFor(() => transport.connections.upCount() === 2, 10_000, "the second login");
        // Two calls at once, one on each: the builtin carrier starts SFTP on its first call.
        await warmUp(proxied, 2);
        const roundTrip = await lengthen(proxied);
        // The first connection is busy while the file is created on the second, and idle
        // when the file is hashed: the hash must go where the hasher was started.
        let release!: () => void;
        const held = transport.connections.run(
          "hold the first connection",
          () => new Promise<void>((resolve) => release = resolve),
        );
        setTimeout(() => release(), roundTrip / 2);
        await putSmallInThreeRoundTrips(proxied, `${server.dir}/inbox/far.bin`, roundTrip);
        await held;
      }, { vessel: { sshClient }, connections: 2, batchHashFromMs: 0 }),
  });
}

Deno.test({
  name:
    "a small file into a directory not there yet takes the round trips of one into a directory that is",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async (proxied) => {
      const { transport, server } = proxied;
      await transport.putWhole("near", `${server.dir}/inbox/near.bin`, bytes(60_000, 14));
      const roundTrip = await lengthen(proxied);
      // Learning from the create that the directory is missing, then making it, is two more.
      await putSmallInThreeRoundTrips(proxied, `${server.dir}/inbox/new/far.bin`, roundTrip);
      assert.ok((await Deno.stat(`${server.dir}/inbox/new`)).isDirectory);
    }, { batchHashFromMs: 0 }),
});

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: a small file hashed by the vessel is published in one round trip: its directory was opened meanwhile`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, server } = proxied;
        await transport.putWhole("near", `${server.dir}/inbox/near.bin`, bytes(60_000, 12));
        const roundTrip = await lengthen(proxied);
        const data = bytes(60_000, 13);
        const destination = `${server.dir}/inbox/hashed.bin`;
        const assembled = await transport.putWhole("hashed", destination, data, 0o640);
        // Opening the directory only now cost the last files of a batch a round trip more.
        await publishInOneRoundTrip(proxied, assembled.tempPath, destination, roundTrip);
        assert.deepEqual(await Deno.readFile(destination), data);
      }, { vessel: { sshClient }, batchHashFromMs: 0 }),
  });
}

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: a file published into the directory of the one before is published in one round trip: the directory stayed open`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, server } = proxied;
        // Both read back on a short link, so neither opens its directory ahead.
        const files = ["first", "second"].map((name, i) => ({
          destination: `${server.dir}/inbox/${name}.bin`,
          data: bytes(60_000, 20 + i),
        }));
        const assembled = [];
        for (const [i, { destination, data }] of files.entries()) {
          assembled.push(await transport.putWhole(`kept${i}`, destination, data, 0o640));
        }
        await transport.publish(assembled[0].tempPath, files[0].destination);
        const roundTrip = await lengthen(proxied);
        // Opening the directory again, and closing it after every fsync, cost a round trip more.
        await publishInOneRoundTrip(
          proxied,
          assembled[1].tempPath,
          files[1].destination,
          roundTrip,
        );
        for (const { destination, data } of files) {
          assert.deepEqual(await Deno.readFile(destination), data);
        }
      }, { vessel: { sshClient } }),
  });
}

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: a file assembled from parts is published in one round trip: its directory was opened ahead`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, server } = proxied;
        const destination = `${server.dir}/inbox/whole.bin`;
        await transport.prepare("whole", destination); // logs in on a short link
        const roundTrip = await lengthen(proxied);
        const parts = [bytes(64 * 1024, 10), bytes(64 * 1024, 11)];
        const assembled = await assembleParts(transport, "whole", destination, parts, 0o640);
        await publishInOneRoundTrip(proxied, assembled.tempPath, destination, roundTrip);
        const whole = new Uint8Array([...parts[0], ...parts[1]]);
        assert.equal(assembled.sha256, sha256(whole));
        assert.deepEqual(await Deno.readFile(destination), whole);
      }, { vessel: { sshClient } }),
  });
}

Deno.test({
  name: "a publish's rename and fsync are sent ahead of the removal of its parts, made beside it",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async (proxied) => {
      const { transport, server, vessel } = proxied;
      const destination = `${server.dir}/inbox/many.bin`;
      const parts = Array.from({ length: 64 }, (_, index) => bytes(1024, 30 + index));
      await transport.prepare("many", destination);
      const assembled = await assembleParts(transport, "many", destination, parts);
      await lengthen(proxied);
      // Behind the 193 removals (each part under three names, and the directory) the rename
      // waited for them to cross a slow link, and for a second flight once TCP started slow.
      const connection = await transport.connections.anyConnection();
      const sent: string[] = [];
      // Written in the rename's own turn, the fsync reaches ssh with it, before the removals.
      let renameTurn = false;
      let fsyncInRenameTurn = false;
      const request = connection.request.bind(connection);
      connection.request = (what, call) => {
        sent.push(what);
        if (what === "posix-rename") {
          renameTurn = true;
          queueMicrotask(() => renameTurn = false);
        }
        if (what === "fsync") fsyncInRenameTurn = renameTurn;
        return request(what, call);
      };
      // As the engine does: the parts go beside the publish.
      await Promise.all([
        transport.publish(assembled.tempPath, destination),
        transport.removeParts("many", parts.length),
      ]);
      assert.deepEqual(sent.slice(0, 3), ["posix-rename", "fsync", "unlink"]);
      assert.ok(fsyncInRenameTurn, "the directory's fsync waited a turn after the rename");
      assert.equal(sent.filter((what) => what === "unlink").length, 3 * parts.length);
      assert.deepEqual(
        await Deno.readFile(destination),
        new Uint8Array(parts.flatMap((part) => [...part])),
      );
      await assert.rejects(Deno.lstat(`${vessel.tempDir}/many`), Deno.errors.NotFound);
    }),
});

for (const sshClient of ["openssh", "builtin"] as const) {
  Deno.test({
    name:
      `${sshClient}: the parts of an assembled file go beside its publish on the connection that assembled it, not on a stalled one`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, proxy, server, vessel } = proxied;
        const destination = `${server.dir}/inbox/pinned.bin`;
        await transport.prepare("pinned", destination); // logs in on a short link
        await waitFor(() => transport.connections.upCount() === 2, 10_000, "the second login");
        const roundTrip = await lengthen(proxied);
        // The second connection's stream stops (TCP backing off its retransmissions). The
        // calls below run one at a time, on the first connection, which ties go to.
        proxy.stallConnection(2, true);
        const parts = [bytes(64 * 1024, 14), bytes(64 * 1024, 15)];
        for (const [index, part] of parts.entries()) await transport.putPart("pinned", index, part);
        const assembly = transport.startAssembly("pinned", parts.length, destination);
        for (const index of parts.keys()) assembly.partReady(index);
        const assembled = await assembly.finish();
        // As the engine does: the publish keeps the first connection busy, so the removal went
        // to the idle, stalled one, and the delivery waited for it.
        const started = performance.now();
        const resume = setTimeout(() => proxy.stallConnection(2, false), 6 * roundTrip);
        try {
          await Promise.all([
            transport.publish(assembled.tempPath, destination),
            transport.removeParts("pinned", parts.length),
          ]);
        } finally {
          clearTimeout(resume);
          proxy.stallConnection(2, false);
        }
        const took = performance.now() - started;
        assert.ok(
          took < 1.5 * roundTrip,
          `publishing and removing the parts took ${took.toFixed(0)} ms, ${
            (took / roundTrip).toFixed(1)
          } round trips`,
        );
        assert.deepEqual(
          await Deno.readFile(destination),
          new Uint8Array([...parts[0], ...parts[1]]),
        );
        await assert.rejects(Deno.lstat(`${vessel.tempDir}/pinned`), Deno.errors.NotFound);
      }, { connections: 2, vessel: { sshClient } }),
  });
}

Deno.test({
  name: "a part whose writes fail after its rename left is not left whole under its name",
  ignore: unavailable !== undefined,
  fn: async () => {
    // The vessel's TempDir is a 256 KiB tmpfs: a part of 1 MiB fills it mid-way, while its
    // close and rename are on their way already.
    const disk = "/srv/cm-round-trips-tmp";
    const tempDir = `${disk}/cm`;
    const server = await startOpenSsh({ tmpfs: { [disk]: 256 * 1024 } });
    const transport = new SftpTransport(server.vesselConfig({ tempDir }), { connections: 1 });
    try {
      await transport.prepare("full", `${server.dir}/inbox/full.bin`);
      await assert.rejects(
        transport.putPart("full", 0, bytes(1 << 20, 8)),
        (error: Error) => /part 0/.test(error.message),
      );
      assert.deepEqual(await transport.listParts("full"), new Set(), "no whole part 0");
      const left = await transport.hash(`${tempDir}/full/0.part.tmp`);
      assert.equal(left, undefined, "no temp part left");
    } finally {
      await transport.close();
      await server.stop();
    }
  },
});

for (const tempDirThere of [false, true]) {
  Deno.test({
    name: `the first part directory on a vessel ${
      tempDirThere ? "with" : "without"
    } TempDir takes one round trip once logged in`,
    ignore: unavailable !== undefined,
    fn: () =>
      behindProxy(async (proxied) => {
        const { transport, vessel, server } = proxied;
        if (tempDirThere) await Deno.mkdir(vessel.tempDir!, { mode: 0o700 });
        await transport.listParts("absent"); // logs in on a short link
        const roundTrip = await lengthen(proxied);
        const started = performance.now();
        // TempDir's mkdir, its check and the part directory's mkdir leave together. The login's
        // uid, which the check needs, was asked for as soon as the login could run commands.
        await transport.prepare("new", `${server.dir}/inbox/new.bin`);
        const took = performance.now() - started;
        assert.ok(
          took < 1.5 * roundTrip,
          `preparing took ${took.toFixed(0)} ms, ${(took / roundTrip).toFixed(1)} round trips`,
        );
        assert.equal((await Deno.stat(`${vessel.tempDir}/new`)).isDirectory, true);
        assert.equal((await Deno.stat(vessel.tempDir!)).mode! & 0o777, 0o700);
      }, { vessel: { sshClient: "openssh" } }),
  });
}

Deno.test({
  name: "a slow first login tells the link's round trip before any SFTP reply does",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async ({ proxy, transport }) => {
      proxy.latency(150); // a 300 ms round trip from the first packet on
      let firstKnown: { at: number; roundTrip: number } | undefined;
      const poll = setInterval(() => {
        const roundTrip = transport.connections.roundTripMs;
        if (roundTrip !== undefined) firstKnown ??= { at: performance.now(), roundTrip };
      }, 20);
      await transport.listParts("absent"); // logs in, then one SFTP request
      const done = performance.now();
      clearInterval(poll);
      assert.ok(firstKnown, "no round trip known");
      // Known once ssh authenticated: the session, the SFTP subsystem and the request remain.
      assert.ok(
        done - firstKnown.at >= 2 * 300,
        `the round trip was known only ${(done - firstKnown.at).toFixed(0)} ms before the reply`,
      );
      assert.ok(
        firstKnown.roundTrip >= 200 && firstKnown.roundTrip <= 900,
        `estimated ${firstKnown.roundTrip.toFixed(0)} ms for a 300 ms round trip`,
      );
    }, { vessel: { sshClient: "openssh" } }),
});

Deno.test({
  name:
    "a call waiting for a login has its first request leave with the SFTP session's start, not after the server's VERSION",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async ({ proxy, transport }) => {
      const roundTrip = 2 * ONE_WAY_MS;
      proxy.latency(ONE_WAY_MS); // long from the first packet on
      let authenticatedAt: number | undefined;
      const poll = setInterval(() => {
        if (transport.connections.roundTripMs !== undefined) authenticatedAt ??= performance.now();
      }, 10);
      await transport.listParts("absent"); // logs in, then one SFTP request
      const done = performance.now();
      clearInterval(poll);
      assert.ok(authenticatedAt, "the login's round trip was never known");
      // Once authenticated: the session's open, the subsystem's start, and the INIT with the
      // request (their answers behind the VERSION). After the VERSION it would be a fourth.
      const took = done - authenticatedAt;
      assert.ok(
        took < 3.5 * roundTrip,
        `the request was answered ${took.toFixed(0)} ms, ${
          (took / roundTrip).toFixed(1)
        } round trips, after the login`,
      );
    }, { vessel: { sshClient: "openssh" } }),
});

/** This machine's own setting, read here rather than by the code under test. */
async function machineRestartsSlowStart(): Promise<boolean> {
  return (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_slow_start_after_idle")).trim() === "1";
}

Deno.test({
  name:
    "check reports the link's round trip, and on a long one whether the shore restarts TCP's slow start after a pause",
  ignore: unavailable !== undefined,
  fn: () =>
    behindProxy(async (proxied) => {
      const { transport } = proxied;
      const linkItem = async () => {
        const items = await transport.probe([]);
        const item = items.find((item) => item.check === "link");
        assert.ok(item?.ok, JSON.stringify(items));
        return item.detail;
      };
      const short = await linkItem();
      assert.match(short, /^round trip \d+ ms$/);
      assert.ok(Number(/\d+/.exec(short)![0]) < LONG_ROUND_TRIP_MS, short);
      await lengthen(proxied);
      const long = await linkItem();
      assert.ok(Number(/\d+/.exec(long)![0]) >= 2 * ONE_WAY_MS, long);
      const restarts = await machineRestartsSlowStart();
      assert.equal(/^the round trip is \d+ ms/.test(long), restarts, long);
      assert.equal(/tcp_slow_start_after_idle = 1\), .*set it to 0/.test(long), restarts, long);
    }),
});

Deno.test({
  name:
    "the daemon's log says once, on a long link, that the shore restarts TCP's slow start after a pause",
  ignore: unavailable !== undefined,
  fn: async () => {
    const restarts = await machineRestartsSlowStart();
    const advised = (lines: string[]) =>
      lines.filter((line) => line.includes("tcp_slow_start_after_idle"));
    // Only answered requests tell the round trip; the pool judges the link at its third call.
    const putThree = async ({ transport, server }: Proxied) => {
      for (const name of ["a", "b", "c"]) {
        await transport.putWhole(name, `${server.dir}/inbox/${name}.bin`, bytes(1000, 1));
      }
    };
    await behindProxy(async (proxied) => {
      const { lines } = proxied;
      await putThree(proxied);
      await new Promise((resolve) => setTimeout(resolve, 50)); // the sysctl is read meanwhile
      assert.deepEqual(advised(lines), [], "a short link got the advice");
    });
    await behindProxy(async (proxied) => {
      const { proxy, lines } = proxied;
      proxy.latency(ONE_WAY_MS); // long from the first packet on
      await putThree(proxied);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(advised(lines).length, restarts ? 1 : 0, lines.join("\n"));
      if (restarts) assert.match(advised(lines)[0], /^the round trip is \d+ ms .*set it to 0/);
    });
  },
});
