/**
 * With Fsync = yes, a published file's directory is flushed after the rename
 * (fsync@openssh.com on a handle of the directory), seen by tracing the
 * vessel's sftp-server.
 */
import assert from "node:assert/strict";
import { SftpTransport } from "../transports/sftp/sftp_transport.ts";
import { serverUnavailable, skipNotice, startOpenSsh } from "./servers.ts";
import { STRACE, straceMissing } from "./strace.ts";
import { silentLogger } from "../transports/transport.ts";

const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
const unavailable = serverUnavailable("openssh") ?? straceMissing;
if (unavailable) skipNotice("directory fsync over SFTP", unavailable);

Deno.test({
  name:
    "SftpTransport.publish() with Fsync fsyncs the destination directory after the rename, on a link taken for long",
  ignore: unavailable !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-fsync-" });
    const trace = `${dir}/sftp.trace`;
    const wrapper = `${dir}/sftp-server`;
    await Deno.writeTextFile(
      wrapper,
      // One trace per sftp-server (the transport opens several connections).
      `#!/bin/sh\nexec ${STRACE} -f -qq -e trace=openat,rename,renameat,renameat2,fsync ` +
        `-o ${trace}.$$ ${SFTP_SERVER} "$@"\n`,
      { mode: 0o755 },
    );
    const server = await startOpenSsh({ sftpServer: wrapper });
    // Taken for a long link, where a directory's fsync leaves with the rename.
    const transport = new SftpTransport(server.vesselConfig({ fsync: true }), {
      flushTogetherBelowMs: 0,
    });
    try {
      const destination = `${server.dir}/inbox/durable.bin`;
      const assembled = await transport.putWhole("fsync1", destination, new Uint8Array(100), 0o644);
      await transport.publish(assembled.tempPath, destination);
      await transport.close();
      // The directory's fsync must be on the connection (sftp-server) that renamed the file.
      let lines: string[] = [];
      for await (const entry of Deno.readDir(dir)) {
        if (!entry.name.startsWith("sftp.trace.")) continue;
        const traced = (await Deno.readTextFile(`${dir}/${entry.name}`)).split("\n");
        if (traced.some((line) => /rename.*durable\.bin/.test(line))) lines = traced;
      }
      const rename = lines.findIndex((line) => /rename.*durable\.bin/.test(line));
      assert.ok(rename >= 0, "no rename traced");
      // The directory may be opened before the rename (requests are pipelined); its fsync
      // must come after.
      const open = lines.findLastIndex((line, i) =>
        i < rename + 3 && line.includes(`"${server.dir}/inbox", O_RDONLY`)
      );
      assert.ok(open >= 0, `the directory was never opened:\n${lines.join("\n")}`);
      const fd = /= (\d+)$/.exec(lines[open])?.[1];
      assert.ok(
        lines.slice(rename).some((line) => line.includes(`fsync(${fd})`) && /= 0$/.test(line)),
        `no fsync of the directory's descriptor ${fd} after the rename:\n${lines.join("\n")}`,
      );
    } finally {
      await transport.close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "SftpTransport with Fsync flushes an assembled file on the vessel before it reports it",
  ignore: serverUnavailable("openssh") !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-fsync-" });
    // A `sync` first on the vessel's PATH that notes what it flushes, and the file's size then.
    const synced = `${dir}/synced`;
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/sync`,
      `#!/bin/sh\nfor f; do [ "$f" = -- ] || echo "$f $(wc -c < "$f")" >> ${synced}; done\n` +
        `exec /bin/sync "$@"\n`,
      { mode: 0o755 },
    );
    const server = await startOpenSsh({ sshdConfig: [`SetEnv PATH=${dir}/bin:/usr/bin:/bin`] });
    const transport = new SftpTransport(server.vesselConfig({ fsync: true }));
    try {
      const parts = [new Uint8Array(300_000).fill(1), new Uint8Array(200_000).fill(2)];
      const streamed = `${server.dir}/inbox/streamed.bin`;
      await transport.prepare("sync1", streamed);
      const assembly = transport.startAssembly("sync1", parts.length, streamed);
      for (const [index, data] of parts.entries()) {
        await transport.putPart("sync1", index, data);
        assembly.partReady(index);
      }
      const fromStream = await assembly.finish();
      // Every part there before the assembly starts: the other command.
      const whole = `${server.dir}/inbox/whole.bin`;
      await transport.prepare("sync2", whole);
      for (const [index, data] of parts.entries()) await transport.putPart("sync2", index, data);
      const all = transport.startAssembly("sync2", parts.length, whole);
      for (const index of parts.keys()) all.partReady(index);
      const fromParts = await all.finish();
      const lines = (await Deno.readTextFile(synced).catch(() => "")).trim().split("\n");
      for (const assembled of [fromStream, fromParts]) {
        assert.ok(
          lines.includes(`${assembled.tempPath} 500000`),
          `${assembled.tempPath} was not flushed whole before its report: ${JSON.stringify(lines)}`,
        );
      }
    } finally {
      await transport.close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * A vessel whose `sync` (first on sshd's PATH) notes, for each `sync -f DIR`,
 * the directory and every file in it with its size, and fails for `-f` when
 * `refuseBatch`; its sftp-server traced for fsync. Puts `count` small files
 * at once after one first file (which tells the link's round trip), then
 * publishes them all.
 */
async function putSmallFilesWithFsync(count: number, refuseBatch: boolean) {
  const dir = await Deno.makeTempDir({ prefix: "cm-flush-" });
  await Deno.mkdir(`${dir}/bin`);
  await Deno.writeTextFile(
    `${dir}/bin/sync`,
    `#!/bin/sh\nif [ "$1" = -f ]; then\n` +
      `  { echo "@ $3"; for f in "$3"/* "$3"/.*.tmp; do ` +
      `[ -f "$f" ] && echo "$f $(wc -c < "$f")"; done; } >> ${dir}/flushes\n` +
      (refuseBatch ? `  exit 1\n` : "") +
      `fi\nexec /bin/sync "$@"\n`,
    { mode: 0o755 },
  );
  const trace = `${dir}/sftp.trace`;
  const wrapper = `${dir}/sftp-server`;
  await Deno.writeTextFile(
    wrapper,
    `#!/bin/sh\nexec ${STRACE} -f -qq -e trace=openat,fsync -o ${trace}.$$ ${SFTP_SERVER} "$@"\n`,
    { mode: 0o755 },
  );
  const server = await startOpenSsh({
    sftpServer: wrapper,
    sshdConfig: [`SetEnv PATH=${dir}/bin:/usr/bin:/bin`],
  });
  const warnings: string[] = [];
  const transport = new SftpTransport(server.vesselConfig({ fsync: true }), {
    log: { ...silentLogger, warn: (line) => warnings.push(line) },
  });
  const inbox = `${server.dir}/inbox`;
  try {
    const data = (index: number) => new Uint8Array(1000 + index).fill(index);
    const destinations = Array.from({ length: count + 1 }, (_, index) => `${inbox}/f${index}.bin`);
    const put = (index: number) =>
      transport.putWhole(`flush${index}`, destinations[index], data(index), 0o644);
    const first = await put(0);
    const assembled = [
      first,
      ...await Promise.all(Array.from({ length: count }, (_, i) => put(i + 1))),
    ];
    const flushed = () => Deno.readTextFile(`${dir}/flushes`).catch(() => "");
    const flushesBeforePublish = await flushed();
    await Promise.all(
      assembled.map((file, index) => transport.publish(file.tempPath, destinations[index])),
    );
    await transport.close();
    // sftp-server's fsyncs, by the path each descriptor was opened for.
    const fsynced = new Set<string>();
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith("sftp.trace.")) continue;
      const opened = new Map<string, string>();
      for (const line of (await Deno.readTextFile(`${dir}/${entry.name}`)).split("\n")) {
        const open = /openat\(AT_FDCWD, "([^"]+)", .*= (\d+)$/.exec(line);
        if (open) opened.set(open[2], open[1]);
        const fsync = /fsync\((\d+)\)\s*= 0/.exec(line);
        if (fsync && opened.has(fsync[1])) fsynced.add(opened.get(fsync[1])!);
      }
    }
    return {
      assembled,
      destinations,
      sizes: assembled.map((_, index) => data(index).length),
      flushesBeforePublish,
      flushesAfter: (await flushed()).slice(flushesBeforePublish.length),
      fsynced,
      warnings,
      inbox,
    };
  } finally {
    await transport.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const countFlushes = (text: string) =>
  text.split("\n").filter((line) => line.startsWith("@ ")).length;

Deno.test({
  name:
    "SftpTransport with Fsync on a short link flushes small files and their renames together with sync -f",
  ignore: unavailable !== undefined,
  fn: async () => {
    const count = 24;
    const run = await putSmallFilesWithFsync(count, false);
    assert.deepEqual(run.warnings, []);
    // The first file goes alone (the link's round trip is not known yet); the others together.
    const before = countFlushes(run.flushesBeforePublish);
    assert.ok(before >= 1 && before < count / 2, run.flushesBeforePublish);
    const whole = new Set(run.flushesBeforePublish.split("\n"));
    for (const [index, file] of run.assembled.entries()) {
      if (index === 0 && run.fsynced.has(file.tempPath)) continue;
      assert.ok(
        whole.has(`${file.tempPath} ${run.sizes[index]}`),
        `${file.tempPath} was not whole in a flush before it was reported:\n` +
          run.flushesBeforePublish,
      );
      assert.ok(!run.fsynced.has(file.tempPath), `${file.tempPath} got an fsync of its own too`);
    }
    // Each rename was flushed with others: its name was there when a later flush ran.
    const renamed = new Set(run.flushesAfter.split("\n"));
    for (const [index, path] of run.destinations.entries()) {
      assert.ok(
        renamed.has(`${path} ${run.sizes[index]}`),
        `${path} was not flushed after its rename:\n${run.flushesAfter}`,
      );
    }
    assert.ok(countFlushes(run.flushesAfter) < count / 2, run.flushesAfter);
    assert.ok(!run.fsynced.has(run.inbox), "the directory got an fsync of its own too");
  },
});

Deno.test({
  name:
    "SftpTransport with Fsync gives each small file and rename its own fsync on a vessel whose sync -f fails, and says so once",
  ignore: unavailable !== undefined,
  fn: async () => {
    const run = await putSmallFilesWithFsync(8, true);
    for (const file of run.assembled) {
      assert.ok(run.fsynced.has(file.tempPath), `${file.tempPath} was never flushed`);
    }
    assert.ok(run.fsynced.has(run.inbox), "the directory was never flushed after the renames");
    assert.equal(run.warnings.length, 1, run.warnings.join("\n"));
    assert.match(run.warnings[0], /could not flush small files together .*fsync of its own/);
  },
});

Deno.test({
  name: "SftpTransport waits for a slow shared flush without dropping its connection",
  ignore: unavailable !== undefined,
  fn: async () => {
    // A flush that outlasts 3 Timeouts, as one writing out a large file's dirty pages would.
    const dir = await Deno.makeTempDir({ prefix: "cm-slow-flush-" });
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/sync`,
      `#!/bin/sh\nif [ "$1" = -f ]; then echo "$3" >> ${dir}/flushes; sleep 3.5; fi\n` +
        `exec /bin/sync "$@"\n`,
      { mode: 0o755 },
    );
    const server = await startOpenSsh({ sshdConfig: [`SetEnv PATH=${dir}/bin:/usr/bin:/bin`] });
    const warnings: string[] = [];
    const transport = new SftpTransport(server.vesselConfig({ fsync: true, timeout: 1 }), {
      log: { ...silentLogger, warn: (line) => warnings.push(line) },
    });
    try {
      const put = (index: number) =>
        transport.putWhole(
          `slow${index}`,
          `${server.dir}/inbox/s${index}.bin`,
          new Uint8Array(500),
        );
      await put(0); // tells the link's round trip
      await Promise.all([1, 2, 3].map(put));
      const flushes = await Deno.readTextFile(`${dir}/flushes`).catch(() => "");
      assert.ok(flushes.includes(`${server.dir}/inbox`), "no shared flush was asked for");
      assert.deepEqual(warnings, []);
    } finally {
      await transport.close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
