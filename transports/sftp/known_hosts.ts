/**
 * OpenSSH `known_hosts` files: parsing, host matching and host key checks.
 *
 * Supported as OpenSSH reads them: plain host names, `[host]:port` for ports
 * other than 22, comma-separated lists, `*`/`?` wildcards, `!` negation and
 * hashed entries (`|1|salt|hash`, HMAC-SHA1). `@revoked` entries refuse their
 * key. `@cert-authority` entries are ignored: certificates are not supported,
 * so a host known only through a CA counts as unknown.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac } from "node:crypto";

/** One key line of a known_hosts file. */
export interface KnownHost {
  /** 1-based line number, for messages. */
  readonly line: number;
  readonly marker?: "@revoked" | "@cert-authority";
  /** The host field as written: patterns or a hashed name. */
  readonly hosts: string;
  /** Key type, e.g. `ssh-ed25519`. */
  readonly keyType: string;
  /** The key blob, base64 as written. */
  readonly key: string;
}

/** What a known_hosts file says about a host's key. */
export type HostKeyStatus =
  /** The key is listed for the host (`line` names the entry). */
  | { readonly status: "known"; readonly line: number }
  /** No key of this type is listed for the host; `otherTypes` are. */
  | { readonly status: "unknown"; readonly otherTypes: readonly string[] }
  /** A different key of the same type is listed (a possible attack). */
  | { readonly status: "changed"; readonly line: number }
  /** The key is marked `@revoked`. */
  | { readonly status: "revoked"; readonly line: number };

/** Parses known_hosts text; malformed lines are skipped as OpenSSH does. */
export function parseKnownHosts(text: string): KnownHost[] {
  const entries: KnownHost[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const fields = lines[index].trim().split(/\s+/);
    if (fields[0] === "" || fields[0].startsWith("#")) continue;
    let marker: KnownHost["marker"];
    if (fields[0].startsWith("@")) {
      if (fields[0] !== "@revoked" && fields[0] !== "@cert-authority") continue;
      marker = fields.shift() as KnownHost["marker"];
    }
    const [hosts, keyType, key] = fields;
    if (!hosts || !keyType || !key) continue;
    entries.push({ line: index + 1, marker, hosts, keyType, key });
  }
  return entries;
}

/** The name a host is listed under: `host` on port 22, else `[host]:port`. */
export function hostLookupName(host: string, port: number): string {
  return port === 22 ? host.toLowerCase() : `[${host.toLowerCase()}]:${port}`;
}

/** Whether the host field of `entry` matches `host` on `port`. */
export function matchesHost(hosts: string, host: string, port: number): boolean {
  const name = hostLookupName(host, port);
  if (hosts.startsWith("|1|")) return matchesHashed(hosts, name);
  let matched = false;
  for (const raw of hosts.split(",")) {
    const negated = raw.startsWith("!");
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (!globMatches(pattern, name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/**
 * Checks `keyType`/`key` (base64 blob) of `host` on `port` against `entries`,
 * as OpenSSH does: revoked beats known, known beats changed.
 */
export function checkHostKey(
  entries: readonly KnownHost[],
  host: string,
  port: number,
  keyType: string,
  key: string,
): HostKeyStatus {
  const forHost = entries.filter((entry) => matchesHost(entry.hosts, host, port));
  const revoked = entries.find((entry) =>
    entry.marker === "@revoked" && entry.key === key && matchesHost(entry.hosts, host, port)
  );
  if (revoked) return { status: "revoked", line: revoked.line };
  const plain = forHost.filter((entry) => entry.marker === undefined);
  const same = plain.find((entry) => entry.keyType === keyType && entry.key === key);
  if (same) return { status: "known", line: same.line };
  const changed = plain.find((entry) => entry.keyType === keyType);
  if (changed) return { status: "changed", line: changed.line };
  const otherTypes = [...new Set(plain.map((entry) => entry.keyType))];
  return { status: "unknown", otherTypes };
}

/** Key types listed for `host` on `port` (not revoked, not CA), in file order. */
export function knownKeyTypes(
  entries: readonly KnownHost[],
  host: string,
  port: number,
): string[] {
  const types = entries
    .filter((entry) => entry.marker === undefined && matchesHost(entry.hosts, host, port))
    .map((entry) => entry.keyType);
  return [...new Set(types)];
}

/** The key type named inside an SSH public key blob. */
export function keyTypeOf(blob: Uint8Array): string {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const length = blob.byteLength >= 4 ? view.getUint32(0) : 0;
  if (length === 0 || 4 + length > blob.byteLength) {
    throw new TypeError(`Cannot read the key type of a ${blob.byteLength}-byte host key blob`);
  }
  return new TextDecoder().decode(blob.subarray(4, 4 + length));
}

/** OpenSSH's fingerprint of a key blob: `SHA256:` and unpadded base64. */
export function fingerprint(blob: Uint8Array): string {
  const digest = createHash("sha256").update(blob).digest("base64");
  return `SHA256:${digest.replace(/=+$/, "")}`;
}

/** A known_hosts line for `host` on `port` with the given key. */
export function knownHostLine(host: string, port: number, keyType: string, key: string): string {
  return `${hostLookupName(host, port)} ${keyType} ${key}\n`;
}

const appending = new Map<string, Promise<unknown>>();

/**
 * Appends a key to known_hosts `file` (created with mode 0600, its directory
 * with 0700) unless an equal entry appeared meanwhile. Appends to one file
 * are serialized within this process.
 */
export function appendKnownHost(
  file: string,
  host: string,
  port: number,
  keyType: string,
  key: string,
): Promise<void> {
  const previous = appending.get(file) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(async () => {
    const text = await readIfExists(file);
    const status = checkHostKey(parseKnownHosts(text ?? ""), host, port, keyType, key);
    if (status.status === "known") return;
    const slash = file.lastIndexOf("/");
    if (slash > 0) await Deno.mkdir(file.slice(0, slash), { recursive: true, mode: 0o700 });
    const prefix = text && !text.endsWith("\n") ? "\n" : "";
    await Deno.writeTextFile(file, prefix + knownHostLine(host, port, keyType, key), {
      append: true,
      create: true,
      mode: 0o600,
    });
  });
  appending.set(file, next);
  return next;
}

/** The text of `file`, or `undefined` if it does not exist. */
export async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

function matchesHashed(field: string, name: string): boolean {
  const [, , salt, hash] = field.split("|");
  if (!salt || !hash) return false;
  const digest = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
  return digest === hash;
}

/** OpenSSH `match_pattern`: `*` any run of characters, `?` one character. */
function globMatches(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let starText = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === "?" || pattern[p] === text[t])) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      starText = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++starText;
    } else {
      return false;
    }
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}
