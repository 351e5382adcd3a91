/**
 * Sends one big file to a loopback OpenSSH vessel through SftpTransport and
 * with `scp`, in the same run, and prints the times: the transport once with
 * the assembly after the upload (`assemble`) and once streamed alongside it
 * (`startAssembly`).
 *
 *   deno run -A tests/bench/sftp_bench.ts [--size MiB] [--part MiB]
 *     [--connections N] [--parallel N] [--runs N] [--assembly after|stream|both]
 *     [--no-fsync] [--client openssh|builtin]
 *   deno run -A tests/bench/sftp_bench.ts --files N [--file-size KiB]
 *     [--deliveries N] [--runs N] [--small whole|parts|both] [--no-fsync]
 *                         (many small files, next to rsync: `putWhole` + publish,
 *                          or prepare, putPart, assemble, publish, removeParts)
 *
 * Generated data lives in a temp directory that is removed at the end.
 */
import { assembleAll } from "../../transports/transport.ts";
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
    client: { type: "string", default: "openssh" },
    deliveries: { type: "string" },
    assembly: { type: "string", default: "both" },
    small: { type: "string", default: "both" },
    "no-fsync": { type: "boolean", default: false },
  },
});
const MiB = 1 << 20;
const size = Number(values.size) * MiB;
const partSize = Math.round(Number(values.part) * MiB);
const connections = Number(values.connections);
const runs = Number(values.runs);
/** The vessel as the transport sees it; `--no-fsync` skips flushing files to disk (like scp, rsync). */
const vessel = () =>
  server.vesselConfig({
    fsync: !values["no-fsync"],
    sshClient: values.client === "builtin" ? "builtin" : "openssh",
  });

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

    const rate = (seconds: number) => (size / MiB / seconds).toFixed(0);
    out(`run ${run + 1}: ${size / MiB} MiB, parts of ${partSize / MiB} MiB`);
    out(`  scp:                  ${scpSeconds.toFixed(2)} s (${rate(scpSeconds)} MiB/s)`);
    const modes = values.assembly === "both" ? ["after", "stream"] : [values.assembly!];
    for (const mode of modes) {
      const result = await sendBig(source, `${inbox}/sftp.bin`, `bench${run}${mode}`, mode);
      out(
        `  SftpTransport ${mode.padEnd(6)}: ${result.total.toFixed(2)} s ` +
          `(${rate(result.total)} MiB/s, ${(result.total / scpSeconds).toFixed(2)}x scp): ` +
          `upload ${result.upload.toFixed(2)} s, then assembly ${result.assembly.toFixed(2)} s, ` +
          `publish+cleanup ${result.publish.toFixed(2)} s; ${result.connections} connection(s), ` +
          `${result.parallel} parts in flight, peak RSS ${(result.peakRss / MiB).toFixed(0)} MiB`,
      );
      await Deno.remove(`${inbox}/sftp.bin`);
    }
  }
}

/**
 * Sends `source` as parts, `parallel` at a time, then assembles them after the
 * upload (`"after"`) or while uploading (`"stream"`), publishes and cleans up.
 */
async function sendBig(source: string, destination: string, key: string, mode: string) {
  const transport = new SftpTransport(vessel(), { connections });
  const parallel = Number(values.parallel ?? transport.capabilities.parallelParts);
  const count = Math.max(1, Math.ceil(size / partSize));
  const started = performance.now();
  await transport.prepare(key, destination);
  const assembly = mode === "stream" ? transport.startAssembly(key, count, destination) : undefined;
  let next = 0;
  let peakRss = 0;
  const worker = async () => {
    using file = await Deno.open(source);
    while (next < count) {
      const index = next++;
      const length = Math.min(partSize, size - index * partSize);
      const data = new Uint8Array(length);
      // Positional reads so concurrent workers do not share a file offset.
      await readAt(file, data, index * partSize);
      await transport.putPart(key, index, data);
      assembly?.partReady(index);
      peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
    }
  };
  try {
    await Promise.all(Array.from({ length: parallel }, worker));
  } catch (error) {
    await assembly?.abort();
    throw error;
  }
  const uploaded = performance.now();
  const assembled = assembly
    ? await assembly.finish()
    : await assembleAll(transport, key, count, destination);
  const assembledAt = performance.now();
  await transport.publish(assembled.tempPath, destination);
  await transport.removeParts(key);
  const done = performance.now();
  await transport.close();
  return {
    total: (done - started) / 1000,
    upload: (uploaded - started) / 1000,
    assembly: (assembledAt - uploaded) / 1000,
    publish: (done - assembledAt) / 1000,
    connections,
    parallel,
    peakRss,
  };
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
  for (let run = 0; run < runs; run++) {
    const rsyncStart = performance.now();
    const rsync = await new Deno.Command("rsync", {
      args: [
        "-a",
        "-e",
        `ssh -i ${server.identityFile} -o UserKnownHostsFile=${server.knownHostsFile} ` +
        `-o BatchMode=yes -p ${server.port}`,
        `${sourceDir}/`,
        `root@127.0.0.1:${server.dir}/rsync${run}/`,
      ],
    }).output();
    if (!rsync.success) {
      throw new Error(`rsync failed: ${new TextDecoder().decode(rsync.stderr)}`);
    }
    const rsyncSeconds = (performance.now() - rsyncStart) / 1000;
    out(`run ${run + 1}: ${count} files of ${size / 1024} KiB`);
    out(
      `  rsync:           ${rsyncSeconds.toFixed(2)} s (${
        (count / rsyncSeconds).toFixed(0)
      } files/s)`,
    );
    const modes = values.small === "both" ? ["whole", "parts"] : [values.small!];
    for (const mode of modes) {
      const transport = new SftpTransport(vessel(), { connections });
      const deliveries = Number(values.deliveries ?? (mode === "whole" ? 8 : 4));
      const dir = `${server.dir}/sftp-${mode}${run}`;
      const started = performance.now();
      let next = 0;
      const worker = async () => {
        while (next < count) {
          const index = next++;
          const key = `small${run}${mode}${index}`;
          const destination = `${dir}/f${index}.bin`;
          let assembled;
          if (mode === "whole") {
            assembled = await transport.putWhole(key, destination, files[index]);
          } else {
            await transport.prepare(key, destination);
            await transport.putPart(key, 0, files[index]);
            assembled = await assembleAll(transport, key, 1, destination);
          }
          await transport.publish(assembled.tempPath, destination);
          if (mode !== "whole") await transport.removeParts(key);
        }
      };
      await Promise.all(Array.from({ length: deliveries }, worker));
      const seconds = (performance.now() - started) / 1000;
      await transport.close();
      out(
        `  SftpTransport ${mode.padEnd(5)}: ${seconds.toFixed(2)} s ` +
          `(${(count / seconds).toFixed(0)} files/s, ${(rsyncSeconds / seconds).toFixed(2)}x ` +
          `rsync's rate), ${deliveries} files in flight`,
      );
    }
  }
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
