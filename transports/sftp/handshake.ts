/**
 * The SSH handshake with a vessel: TCP without Nagle's delay, ChaCha20 first,
 * host key algorithms known for the vessel first, host key verification,
 * authentication and a handshake timeout of `Timeout` seconds.
 *
 * @module
 */
import {
  type AnyAuthMethod,
  chacha20CiphersFinalized,
  type CipherAlgorithm,
  Client,
  type ServerHostKeyAlgorithm,
} from "./_ssh2.ts";
import { Buffer } from "node:buffer";
import { TransportError } from "../transport.ts";
import type { Credentials } from "./auth.ts";
import { verifyHostKey } from "./host_key.ts";
import { coalescingSocket } from "./_coalesce.ts";
import { closedDuringLogin, type ConnectionOptions, type SshLink } from "./connection.ts";
import type { Socket } from "node:net";

/** What was learned while connecting, for `check` and logs. */
export interface ConnectionInfo {
  /** The server's software version, e.g. `OpenSSH_9.2p1`. */
  readonly server: string;
  readonly cipher: string;
  /** Host key type and fingerprint, and how it was accepted. */
  readonly hostKey: string;
  /** The authentication method that succeeded. */
  readonly auth: string;
}

/** ssh2's client with what a connection judges liveness by (see {@linkcode SshLink}). */
export type MeteredClient = Client & Required<Pick<SshLink, "bytesMoved" | "ping">>;

/** How to reach a vessel with the builtin client; built once per transport. */
export interface ConnectOptions extends ConnectionOptions {
  readonly credentials: Credentials;
  /** Key types known_hosts lists for the vessel, preferred in negotiation. */
  readonly knownKeyTypes: readonly string[];
}

const CIPHERS: CipherAlgorithm[] = [
  "chacha20-poly1305@openssh.com",
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes192-ctr",
  "aes256-ctr",
];

/** Set when ssh2 was loaded before the ChaCha20 leak fix took effect. */
let chacha20Leaks = false;

/** The cipher preference: ChaCha20 (fastest under Deno) unless its leak fix is bypassed. */
function ciphers(): CipherAlgorithm[] {
  return chacha20Leaks ? CIPHERS.filter((cipher) => !cipher.startsWith("chacha20")) : CIPHERS;
}

const HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/**
 * Connects, verifies the host key and authenticates, then calls `connected`
 * synchronously (so no event is missed) and resolves with its result. Rejects
 * with a {@linkcode TransportError}: `"connection"`, `"host-key"` or `"auth"`.
 */
export function handshake<T>(
  options: ConnectOptions,
  connected: (client: MeteredClient, info: ConnectionInfo) => T,
): Promise<T> {
  const { vessel, credentials, log } = options;
  const where = `vessel "${vessel.name}" (${vessel.username}@${vessel.address}:${vessel.port})`;
  const timeoutMs = vessel.timeout * 1000;
  const client = new Client();
  // Our own socket: connected below, Nagle off, writes coalesced.
  const sock = coalescingSocket();
  let hostKeyError: TransportError | undefined;
  let hostKey = "";
  /** The key differs from KnownHostsFile (accepted with StrictHostKeyChecking = no). */
  let hostKeyChanged = false;
  let acceptedKey: Buffer | undefined;
  let cipher = "";
  let attempt = -1;
  let firstError: Error | undefined;
  const preferred = HOST_KEY_ALGORITHMS.filter((algorithm) =>
    options.knownKeyTypes.some((type) => algorithmsFor(type).includes(algorithm))
  );
  const hostKeyAlgorithms = [
    ...preferred,
    ...HOST_KEY_ALGORITHMS.filter((algorithm) => !preferred.includes(algorithm)),
  ];

  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const abort = () => {
      if (settled) return;
      settled = true;
      client.destroy();
      reject(closedDuringLogin(where));
    };
    options.signal?.addEventListener("abort", abort, { once: true });
    client.on("handshake", (negotiated) => {
      cipher = negotiated.cs.cipher;
    });
    client.on("error", (error: Error) => {
      firstError ??= error; // Later ones ("Connection lost before handshake") say less.
    });
    client.on("ready", () => {
      options.signal?.removeEventListener("abort", abort);
      if (settled) return;
      settled = true;
      if (cipher.startsWith("chacha20") && chacha20CiphersFinalized() === 0 && !chacha20Leaks) {
        chacha20Leaks = true;
        log.warn(
          "ssh2 was loaded before the ChaCha20 leak fix (import it only through " +
            "transports/sftp/_ssh2.ts); new connections use AES",
        );
      }
      const auth = credentials.names[attempt] ?? "none";
      const info = {
        server: serverVersion(client),
        cipher,
        hostKey,
        auth,
      };
      log.debug(
        `connected to ${vessel.address}:${vessel.port} (${info.server}, ${cipher}, ${auth})`,
      );
      resolve(connected(linkOf(client, sock), info));
    });
    client.on("close", () => {
      options.signal?.removeEventListener("abort", abort);
      if (settled) return;
      settled = true;
      reject(openError(where, credentials, hostKeyError, firstError, timeoutMs));
    });
    const config = {
      host: vessel.address,
      port: vessel.port,
      username: vessel.username,
      readyTimeout: timeoutMs,
      // ssh2's keepalive drops a connection whose ping reply waits behind
      // megabytes of queued writes (a slow link that is alive); the
      // connection's own watchdog judges liveness by progress instead.
      keepaliveInterval: 0,
      algorithms: {
        cipher: Deno.env.get("CM_CIPHER")
          ? [Deno.env.get("CM_CIPHER") as CipherAlgorithm]
          : ciphers(),
        serverHostKey: hostKeyAlgorithms,
      },
      hostVerifier: (key: Buffer, verify: (valid: boolean) => void): undefined => {
        // Must return undefined: ssh2 treats any other return value as the verdict.
        if (acceptedKey?.equals(key)) {
          // A re-key (OpenSSH re-keys ChaCha20 every 1 GiB) offers the key already
          // checked. Answer at once: while an answer is pending, ssh2 sends data
          // with the new keys before its NEWKEYS, and sshd drops the connection
          // ("Bad packet length").
          verify(true);
          return undefined;
        }
        verifyHostKey(vessel, key, log).then(
          (accepted) => {
            hostKey = accepted.description;
            hostKeyChanged = accepted.changed;
            acceptedKey = Buffer.from(key);
            verify(true);
          },
          (error) => {
            hostKeyError = error instanceof TransportError ? error : new TransportError(
              `Cannot verify the host key of ${where}: ${error}`,
              "host-key",
              { cause: error },
            );
            verify(false);
          },
        );
        return undefined;
      },
      authHandler: (
        _methodsLeft: unknown,
        _partialSuccess: unknown,
        next: (method: AnyAuthMethod | false) => void,
      ) => {
        attempt++;
        // As OpenSSH: never send a password to a host whose key has changed.
        while (hostKeyChanged && sendsSecret(credentials.methods[attempt])) attempt++;
        next(credentials.methods[attempt] ?? false);
      },
    };
    if (options.signal?.aborted) return abort();
    try {
      // ssh2 waits for the socket's 'connect' and times the handshake from now on.
      sock.connect({ host: vessel.address, port: vessel.port });
      client.connect({ ...config, sock } as Parameters<Client["connect"]>[0]);
    } catch (error) {
      settled = true;
      reject(
        new TransportError(`Cannot connect to ${where}: ${messageOf(error)}`, "connection", {
          cause: error,
        }),
      );
    }
  });
}

function linkOf(client: Client, sock: Socket): MeteredClient {
  // ssh2 keeps no public ping: its global requests answer in order through
  // `_callbacks`, so the callback goes there before the request is sent.
  const internals = client as unknown as {
    _callbacks?: ((failed: boolean) => void)[];
    _protocol?: { ping(): void };
  };
  return Object.assign(client, {
    // What the vessel sends includes the window adjusts for the data it took: progress
    // while a write's reply is still far off.
    bytesMoved: () => sock.bytesRead,
    ping: (answered: () => void) => {
      if (!internals._callbacks || !internals._protocol) return false;
      internals._callbacks.push(answered);
      internals._protocol.ping();
      return true;
    },
  });
}

/** Whether an auth method would hand a password to the server. */
function sendsSecret(method: AnyAuthMethod | undefined): boolean {
  return method?.type === "password" || method?.type === "keyboard-interactive";
}

/** Host key algorithms that carry keys of `type`. */
function algorithmsFor(type: string): string[] {
  return type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [type];
}

function serverVersion(client: Client): string {
  const remote = (client as unknown as { _remoteVer?: string })._remoteVer;
  return remote ?? "unknown server";
}

function openError(
  where: string,
  credentials: Credentials,
  hostKeyError: TransportError | undefined,
  error: Error | undefined,
  timeoutMs: number,
): TransportError {
  if (hostKeyError) return hostKeyError;
  const level = (error as { level?: string } | undefined)?.level;
  if (level === "client-authentication") {
    return new TransportError(
      `Cannot log in to ${where}: authentication refused (tried ${credentials.names.join(", ")})`,
      "auth",
      { cause: error },
    );
  }
  if (level === "client-timeout" && /handshake/i.test(error?.message ?? "")) {
    return new TransportError(
      `Cannot connect to ${where}: no SSH handshake within ${timeoutMs / 1000} s (Timeout)`,
      "connection",
      { cause: error },
    );
  }
  const detail = error ? messageOf(error) : "the connection closed during the handshake";
  return new TransportError(
    `Cannot connect to ${where}: ${detail}`,
    "connection",
    { cause: error },
  );
}

function messageOf(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}
