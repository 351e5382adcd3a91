/**
 * Host key verification with `StrictHostKeyChecking` as OpenSSH means it:
 * `yes` refuses unknown and changed keys; `accept-new` records unknown keys
 * in `KnownHostsFile` and refuses changed ones; `no` accepts anything with a
 * warning (and, like OpenSSH, records unknown keys). A `@revoked` key is
 * always refused.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { SftpVessel } from "./options.ts";
import { TransportError, type TransportLogger as Logger } from "../transport.ts";
import { expandHome, processAuthEnvironment } from "./auth.ts";
import {
  appendKnownHost,
  checkHostKey,
  fingerprint,
  keyTypeOf,
  knownKeyTypes,
  parseKnownHosts,
  readIfExists,
} from "./known_hosts.ts";

/** The known_hosts path of `vessel` with `~/` expanded. */
export function knownHostsPath(vessel: SftpVessel): string {
  return expandHome(vessel.knownHostsFile, processAuthEnvironment().home);
}

/** Key types known_hosts lists for `vessel` (empty if the file is missing or unreadable). */
export async function knownKeyTypesOf(vessel: SftpVessel): Promise<string[]> {
  try {
    const text = await readIfExists(knownHostsPath(vessel));
    return knownKeyTypes(parseKnownHosts(text ?? ""), vessel.address ?? "", vessel.port);
  } catch {
    return [];
  }
}

/** An accepted host key. */
export interface AcceptedHostKey {
  /** "ssh-ed25519 SHA256:... (known_hosts line 3)". */
  readonly description: string;
  /**
   * Accepted although KnownHostsFile holds another key (StrictHostKeyChecking
   * = no): as OpenSSH does, no password may then be sent to it.
   */
  readonly changed: boolean;
}

/**
 * Checks the raw host key `blob` the vessel offered. Resolves with its
 * description when it is accepted; rejects with a {@linkcode TransportError}
 * coded `"host-key"`.
 */
export async function verifyHostKey(
  vessel: SftpVessel,
  blob: Uint8Array,
  log: Logger,
): Promise<AcceptedHostKey> {
  const description = await checkOfferedKey(vessel, blob, log);
  return { description, changed: description.includes(CHANGED_ACCEPTED) };
}

const CHANGED_ACCEPTED = "(CHANGED; accepted: StrictHostKeyChecking = no)";

async function checkOfferedKey(
  vessel: SftpVessel,
  blob: Uint8Array,
  log: Logger,
): Promise<string> {
  const host = vessel.address ?? "";
  const port = vessel.port;
  const file = knownHostsPath(vessel);
  const keyType = keyTypeOf(blob);
  const print = fingerprint(blob);
  const key = Buffer.from(blob).toString("base64");
  const offered = `${keyType} ${print}`;
  const hostPort = `${host}:${port}`;
  const failed = `Host key verification failed for vessel "${vessel.name}" (${hostPort})`;

  let text: string | undefined;
  try {
    text = await readIfExists(file);
  } catch (error) {
    throw new TransportError(
      `${failed}: cannot read KnownHostsFile ${JSON.stringify(file)}: ${error}`,
      "host-key",
      { cause: error },
    );
  }
  const status = checkHostKey(parseKnownHosts(text ?? ""), host, port, keyType, key);
  const policy = vessel.strictHostKeyChecking;

  switch (status.status) {
    case "known":
      return `${offered} (line ${status.line} of ${JSON.stringify(file)})`;
    case "revoked":
      throw new TransportError(
        `${failed}: its ${keyType} key ${print} is marked @revoked on line ${status.line} ` +
          `of ${JSON.stringify(file)}`,
        "host-key",
      );
    case "changed": {
      if (policy === "no") {
        log.warn(
          `the ${keyType} host key of ${hostPort} has CHANGED (now ${print}; line ` +
            `${status.line} of ${JSON.stringify(file)} differs); accepted because ` +
            `StrictHostKeyChecking = no; password and keyboard-interactive authentication ` +
            `are disabled to avoid man-in-the-middle attacks`,
        );
        return `${offered} ${CHANGED_ACCEPTED}`;
      }
      const lookup = port === 22 ? host : `[${host}]:${port}`;
      throw new TransportError(
        `${failed}: REMOTE HOST IDENTIFICATION HAS CHANGED: the server offers ${keyType} key ` +
          `${print}, but line ${status.line} of ${JSON.stringify(file)} holds a different ` +
          `${keyType} key. Someone could be eavesdropping (a man-in-the-middle attack), or ` +
          `the host key was replaced; if the new key is right, remove the old one with ` +
          `ssh-keygen -R ${JSON.stringify(lookup)} -f ${JSON.stringify(file)}`,
        "host-key",
      );
    }
    case "unknown": {
      if (policy === "yes") {
        const others = status.otherTypes.length > 0
          ? ` (it lists only ${status.otherTypes.join(", ")} keys for this host)`
          : "";
        throw new TransportError(
          `${failed}: its ${keyType} key ${print} is not in KnownHostsFile ` +
            `${JSON.stringify(file)}${others}. If the key is right, add it ` +
            `(ssh-keyscan -p ${port} ${host} >> ${JSON.stringify(file)}) or set ` +
            `StrictHostKeyChecking = accept-new`,
          "host-key",
        );
      }
      try {
        await appendKnownHost(file, host, port, keyType, key);
      } catch (error) {
        if (policy === "accept-new") {
          throw new TransportError(
            `${failed}: cannot record its ${keyType} key ${print} in ` +
              `${JSON.stringify(file)}: ${error}`,
            "host-key",
            { cause: error },
          );
        }
        log.warn(`cannot record the host key of ${hostPort} in ${JSON.stringify(file)}: ${error}`);
      }
      if (policy === "no") {
        log.warn(
          `accepted the unknown ${keyType} host key ${print} of ${hostPort} without ` +
            `checking (StrictHostKeyChecking = no)`,
        );
      } else {
        log.info(`recorded the new ${keyType} host key ${print} of ${hostPort} in ${file}`);
      }
      return `${offered} (new; added to ${JSON.stringify(file)})`;
    }
  }
}
