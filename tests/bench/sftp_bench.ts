/**
 * Sends one big file to a loopback OpenSSH vessel through SftpTransport and
 * with `scp`, in the same run, and prints both times.
 *
 *   deno run -A tests/bench/sftp_bench.ts [--size MiB] [--part MiB]
 *     [--connections N] [--parallel N] [--runs N]
 *   deno run -A tests/bench/sftp_bench.ts --files N [--file-size KiB]
 *     [--deliveries N]      (many small files, next to rsync)
 *
 * Generated data lives in a temp directory that is removed at the end.
 */
import { parseArgs } from "node:util";
import { SftpTransport } from "../../transports/sftp/sftp_transport.ts";
import { startOpenSsh } from "../servers.ts";

const { values } = parseArgs({
  options: {
    size: { type: "string", default: "1024" },
    part: { type: "string", default: "10" },
    connections: { type: "string", default: "2" },
    parallel: { type: "string" },
    runs: { type: "string", default: "1" },
    files: { type: "string" },
    "file-size": { type: "string", default: "16" },
    deliveries: { type: "string" },
  },
});
const MiB = 1 << 20;
const size = Number(values.size) * MiB;
const partSize = Math.round(Number(values.part) * MiB);
const connections = Number(values.connections);
const runs = Number(values.runs);

function out(line: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
}

const work = await Deno.makeTempDir({ prefix: "cm-bench-" });
const server = await startOpenSsh();
try {
  if (values.files) await smallFiles(Number(values.files), Number(values["file-size"]) * 1024);
  else await bigFile();
} finally {
  await server.stop();
  await Deno.remove(work, { recursive: true });
}

/** Sends one file of `size` bytes through SftpTransport and with scp, `runs` times. */
async function bigFile(): Promise<void> {
  const source = `${work}/source.bin`;
  await writeRandom(source, size);
  const inbox = `${server.dir}/inbox`;
  await Deno.mkdir(inbox);

  for (let run = 0; run < runs; run++) {
    const scpStart = performance.now();
    const scp = await new Deno.Command("scp", {
      args: [
        "-q",
        "-i",
        server.identityFile,
        "-o",
        `UserKnownHostsFile=${server.knownHostsFile}`,
        "-o",
        "BatchMode=yes",
        "-P",
        String(server.port),
        source,
        `root@127.0.0.1:${inbox}/scp.bin`,
      ],
    }).output();
    if (!scp.success) throw new Error(`scp failed: ${new TextDecoder().decode(scp.stderr)}`);
    const scpSeconds = (performance.now() - scpStart) / 1000;
    await Deno.remove(`${inbox}/scp.bin`);

    const transport = new SftpTransport(server.vesselConfig(), { connections });
    const parallel = Number(values.parallel ?? transport.capabilities.parallelParts);
    const key = `bench${run}`;
    const destination = `${inbox}/sftp.bin`;
    const count = Math.max(1, Math.ceil(size / partSize));
    const started = performance.now();
    await transport.prepare(key, destination);
    let next = 0;
    let peakRss = 0;
    const worker = async () => {
      // One handle per worker, so seeks of concurrent workers do not interfere.
      using file = await Deno.open(source);
      while (next < count) {
        const index = next++;
        const length = Math.min(partSize, size - index * partSize);
        const data = new Uint8Array(length);
        // Positional reads so concurrent workers do not share a file offset.
        await readAt(file, data, index * partSize);
        await transport.putPart(key, index, data);
        peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    const uploaded = performance.now();
    const assembled = await transport.assemble(key, count, destination);
    const assembledAt = performance.now();
    await transport.publish(assembled.tempPath, destination);
    await transport.removeParts(key);
    const total = (performance.now() - started) / 1000;
    await transport.close();
    await Deno.remove(destination);

    const rate = (seconds: number) => (size / MiB / seconds).toFixed(0);
    out(
      `run ${run + 1}: ${size / MiB} MiB, parts of ${partSize / MiB} MiB, ` +
        `${connections} connection(s), ${parallel} parts in flight`,
    );
    out(`  scp:          ${scpSeconds.toFixed(2)} s (${rate(scpSeconds)} MiB/s)`);
    out(
      `  SftpTransport: ${total.toFixed(2)} s (${rate(total)} MiB/s): upload ` +
        `${((uploaded - started) / 1000).toFixed(2)} s, assemble+hash ` +
        `${((assembledAt - uploaded) / 1000).toFixed(2)} s, publish+cleanup ` +
        `${((performance.now() - assembledAt) / 1000 - 0).toFixed(2)} s, ` +
        `peak RSS ${(peakRss / MiB).toFixed(0)} MiB`,
    );
  }
}

/** Replicates `count` files of `size` bytes through SftpTransport and with rsync. */
async function smallFiles(count: number, size: number): Promise<void> {
  const sourceDir = `${work}/small`;
  await Deno.mkdir(sourceDir);
  const files: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const data = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
    files.push(data.length === size ? data : new Uint8Array(size).fill(index % 251));
    await Deno.writeFile(`${sourceDir}/f${index}.bin`, files[index]);
  }
  const rsyncStart = performance.now();
  const rsync = await new Deno.Command("rsync", {
    args: [
      "-a",
      "-e",
      `ssh -i ${server.identityFile} -o UserKnownHostsFile=${server.knownHostsFile} ` +
      `-o BatchMode=yes -p ${server.port}`,
      `${sourceDir}/`,
      `root@127.0.0.1:${server.dir}/rsync/`,
    ],
  }).output();
  if (!rsync.success) throw new Error(`rsync failed: ${new TextDecoder().decode(rsync.stderr)}`);
  const rsyncSeconds = (performance.now() - rsyncStart) / 1000;

  const transport = new SftpTransport(server.vesselConfig(), { connections });
  const deliveries = Number(values.deliveries ?? transport.capabilities.parallelDeliveries);
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      const key = `small${index}`;
      const destination = `${server.dir}/sftp/f${index}.bin`;
      await transport.prepare(key, destination);
      await transport.putPart(key, 0, files[index]);
      const assembled = await transport.assemble(key, 1, destination);
      await transport.publish(assembled.tempPath, destination);
      await transport.removeParts(key);
    }
  };
  await Promise.all(Array.from({ length: deliveries }, worker));
  const seconds = (performance.now() - started) / 1000;
  await transport.close();
  out(`${count} files of ${size / 1024} KiB, ${deliveries} deliveries at once:`);
  out(
    `  rsync:         ${rsyncSeconds.toFixed(2)} s (${(count / rsyncSeconds).toFixed(0)} files/s)`,
  );
  out(`  SftpTransport: ${seconds.toFixed(2)} s (${(count / seconds).toFixed(0)} files/s)`);
}

async function writeRandom(path: string, length: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(MiB);
  for (let written = 0; written < length; written += block.length) {
    for (let offset = 0; offset < block.length; offset += 65536) {
      crypto.getRandomValues(block.subarray(offset, offset + 65536));
    }
    const chunk = block.subarray(0, Math.min(block.length, length - written));
    let done = 0;
    while (done < chunk.length) done += await file.write(chunk.subarray(done));
  }
  file.close();
}

async function readAt(file: Deno.FsFile, into: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    await file.seek(position + done, Deno.SeekMode.Start);
    const read = await file.read(into.subarray(done));
    if (read === null) throw new Error(`Unexpected end of file at ${position + done}`);
    done += read;
  }
}
