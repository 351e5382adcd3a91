/**
 * `contentmonster check` for an SFTP vessel: one item per thing the
 * transport needs, in the order they depend on each other. Never throws.
 *
 * @module
 */
import type { SftpVessel } from "./options.ts";
import { errorMessage } from "../../lib/error_message.ts";
import { joinPath, parentOf, type ProbeItem, TransportError } from "../transport.ts";
import { EMPTY_SHA256, parseSha256, PROBE_COMMAND } from "./commands.ts";
import type { SshConnection } from "./connection.ts";
import { freeBytes, removeFile, statPath, writeFile } from "./sftp_ops.ts";
import { ensureTempDir, loginUid } from "./private_temp_dir.ts";
import { slowStartAdvice } from "./slow_start.ts";

/** Probes `vessel` through a connection from `connect`. */
export async function probeVessel(
  vessel: SftpVessel,
  connect: () => Promise<SshConnection>,
  destinations: readonly string[],
): Promise<ProbeItem[]> {
  const items: ProbeItem[] = [];
  const add = (check: string, ok: boolean, detail: string) => items.push({ check, ok, detail });
  const target = `${vessel.username}@${vessel.address}:${vessel.port}`;

  let connection: SshConnection;
  try {
    connection = await connect();
  } catch (error) {
    const code = error instanceof TransportError ? error.code : "connection";
    if (code === "host-key" || code === "auth") add("connect", true, target);
    if (code === "auth") add("host key", true, "accepted");
    add(
      code === "host-key" ? "host key" : code === "auth" ? "auth" : "connect",
      false,
      errorMessage(error),
    );
    return items;
  }
  const { info } = connection;
  const user = connection.target.slice(0, connection.target.lastIndexOf("@"));
  add("connect", true, `${connection.target} (${info.server}, ${info.cipher})`);
  add("host key", true, info.hostKey);
  add("auth", true, `${user} with ${info.auth}`);

  let sftp = false;
  try {
    const extensions = await connection.extensions();
    add("sftp", true, `extensions: ${extensions.join(", ") || "none"}`);
    sftp = true;
    const rename = extensions.includes("posix-rename@openssh.com");
    add(
      "posix-rename",
      rename,
      rename
        ? "atomic replace supported"
        : "posix-rename@openssh.com is missing: files cannot be replaced atomically",
    );
  } catch (error) {
    add("sftp", false, errorMessage(error));
  }

  try {
    const result = await connection.exec(PROBE_COMMAND, vessel.timeout * 3000);
    const cat = /^cat ok$/m.test(result.stdout);
    add("cat", cat, cat ? "runs" : `cannot run cat: ${failure(result.code, result.stderr)}`);
    const hasher = /^hasher (\S+)$/m.exec(result.stdout)?.[1] ?? "sha256sum";
    const hashes = parseSha256(result.stdout) === EMPTY_SHA256;
    add(
      "sha256",
      hashes,
      hashes
        ? (hasher === "openssl" ? "openssl dgst -sha256" : "sha256sum (slower than openssl)")
        : `neither openssl nor sha256sum works: ${failure(result.code, result.stderr)}`,
    );
  } catch (error) {
    add("commands", false, errorMessage(error));
  }

  if (!sftp) return items;
  try {
    add("link", true, await probeLink(connection, vessel.tempDir));
  } catch (error) {
    add("link", false, errorMessage(error));
  }
  try {
    const uid = await loginUid(
      (command, deadlineMs) => connection.exec(command, deadlineMs),
      vessel.timeout * 3000,
    );
    await ensureTempDir(connection, vessel.tempDir, { vessel: vessel.name, uid });
    await probeWrite(connection, vessel.tempDir);
    add("TempDir", true, `${JSON.stringify(vessel.tempDir)} is writable`);
  } catch (error) {
    add("TempDir", false, `${JSON.stringify(vessel.tempDir)}: ${errorMessage(error)}`);
  }
  for (const destination of destinations) {
    const check = `destination ${JSON.stringify(destination)}`;
    try {
      add(check, true, await probeDestination(connection, destination));
    } catch (error) {
      add(check, false, errorMessage(error));
    }
  }
  try {
    const free = await freeBytes(connection, vessel.tempDir);
    add(
      "free space",
      true,
      free === undefined
        ? "unknown (no statvfs@openssh.com)"
        : `${formatBytes(free)} free for TempDir`,
    );
  } catch (error) {
    add("free space", false, errorMessage(error));
  }
  return items;
}

/**
 * The round trip of one SFTP request, and on a long link whether the shore
 * keeps TCP's window across pauses (see slow_start.ts).
 */
async function probeLink(connection: SshConnection, path: string): Promise<string> {
  const started = performance.now();
  await statPath(connection, path);
  const roundTripMs = performance.now() - started;
  return await slowStartAdvice(roundTripMs) ?? `round trip ${Math.round(roundTripMs)} ms`;
}

/** Writes and removes a probe file in `destination` or its nearest existing ancestor. */
async function probeDestination(connection: SshConnection, destination: string): Promise<string> {
  let dir = destination;
  for (;;) {
    const stats = await statPath(connection, dir);
    if (stats && !stats.isDirectory()) {
      throw new Error(`${JSON.stringify(dir)} exists and is not a directory`);
    }
    if (stats || dir === "/") break;
    dir = parentOf(dir);
  }
  await probeWrite(connection, dir);
  return dir === destination
    ? "writable"
    : `does not exist yet; ${JSON.stringify(dir)} is writable, so it can be created`;
}

async function probeWrite(connection: SshConnection, dir: string): Promise<void> {
  const random = crypto.getRandomValues(new Uint8Array(6));
  const name = `.contentmonster-probe-${Array.from(random, (b) => b.toString(16)).join("")}`;
  const path = joinPath(dir, name);
  await writeFile(connection, path, new TextEncoder().encode("ContentMonster probe\n"));
  await removeFile(connection, path);
}

function failure(code: number | undefined, stderr: string): string {
  return `exit ${code ?? "unknown"}${stderr.trim() ? `: ${stderr.trim().slice(0, 300)}` : ""}`;
}

function formatBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
