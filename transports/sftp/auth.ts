/**
 * Client authentication as OpenSSH users expect it: the ssh-agent
 * (`SSH_AUTH_SOCK`), then `IdentityFile` or else the default keys
 * `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist, then `Password`.
 *
 * Keys are parsed and test-signed here, so a key that cannot work under Deno
 * fails with a message that says how to convert it instead of a bare
 * "All configured authentication methods failed".
 *
 * @module
 */
import { type AnyAuthMethod, type ParsedKey, utils } from "./_ssh2.ts";
import { Buffer } from "node:buffer";
import type { SftpVessel } from "./options.ts";
import { TransportError } from "../transport.ts";

/** Where the defaults come from; tests pass their own. */
export interface AuthEnvironment {
  /** The user's home directory (`$HOME`). */
  readonly home?: string;
  /** The ssh-agent socket (`$SSH_AUTH_SOCK`). */
  readonly agentSocket?: string;
}

/** Authentication methods to try, in order, with names for messages. */
export interface Credentials {
  readonly methods: readonly AnyAuthMethod[];
  /** One name per method: "ssh-agent", `key "/root/.ssh/id_ed25519"`, "password". */
  readonly names: readonly string[];
  /** Default keys that were skipped, with the reason (for a log line). */
  readonly skipped: readonly string[];
}

const DEFAULT_KEYS = ["id_ed25519", "id_ecdsa", "id_rsa"];

/** The environment of this process, read only where permitted. */
export function processAuthEnvironment(): AuthEnvironment {
  const read = (name: string) => {
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined;
    }
  };
  return { home: read("HOME"), agentSocket: read("SSH_AUTH_SOCK") };
}

/** Expands a leading `~/` to `home`. */
export function expandHome(path: string, home: string | undefined): string {
  if (home && (path === "~" || path.startsWith("~/"))) return home + path.slice(1);
  return path;
}

/**
 * The methods to try for `vessel`. Throws a {@linkcode TransportError} with
 * code `"auth"` if the configured IdentityFile cannot be used or no method
 * is left at all.
 */
export async function loadCredentials(
  vessel: SftpVessel,
  environment: AuthEnvironment = processAuthEnvironment(),
): Promise<Credentials> {
  const username = vessel.username;
  const methods: AnyAuthMethod[] = [];
  const names: string[] = [];
  const skipped: string[] = [];

  if (environment.agentSocket && await isSocket(environment.agentSocket)) {
    methods.push({ type: "agent", username, agent: environment.agentSocket });
    names.push("ssh-agent");
  }

  if (vessel.identityFile) {
    const path = expandHome(vessel.identityFile, environment.home);
    const key = await loadPrivateKey(vessel.name, path, vessel.passphrase?.reveal());
    methods.push({ type: "publickey", username, key });
    names.push(`key ${JSON.stringify(path)}`);
  } else if (environment.home) {
    for (const name of DEFAULT_KEYS) {
      const path = `${environment.home}/.ssh/${name}`;
      try {
        await Deno.stat(path);
      } catch {
        continue;
      }
      try {
        const key = await loadPrivateKey(vessel.name, path, vessel.passphrase?.reveal());
        methods.push({ type: "publickey", username, key });
        names.push(`key ${JSON.stringify(path)}`);
      } catch (error) {
        skipped.push(error instanceof Error ? error.message : String(error));
      }
    }
  }

  if (vessel.password) {
    const password = vessel.password.reveal();
    methods.push({ type: "password", username, password });
    names.push("password");
    methods.push({
      type: "keyboard-interactive",
      username,
      prompt: (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => password)),
    });
    names.push("keyboard-interactive password");
  }

  if (methods.length === 0) {
    const why = skipped.length > 0
      ? skipped.join("; ")
      : `no ssh-agent (SSH_AUTH_SOCK), no IdentityFile, no ~/.ssh/id_ed25519, id_ecdsa or id_rsa, and no Password`;
    throw new TransportError(
      `Cannot log in to vessel "${vessel.name}" as "${username}": no way to authenticate: ${why}`,
      "auth",
    );
  }
  return { methods, names, skipped };
}

/**
 * Reads, decrypts and test-signs the private key at `path`. Throws a
 * {@linkcode TransportError} with code `"auth"` whose message says what is
 * wrong with the key and how to fix it.
 */
export async function loadPrivateKey(
  vessel: string,
  path: string,
  passphrase: string | undefined,
): Promise<ParsedKey> {
  const subject = `IdentityFile ${JSON.stringify(path)} of vessel "${vessel}"`;
  let data: Buffer;
  try {
    // A Uint8Array would be silently ignored by ssh2: it must be a Buffer.
    data = Buffer.from(await Deno.readFile(path));
  } catch (error) {
    throw new TransportError(
      `Cannot read ${subject}: ${error instanceof Error ? error.message : error}`,
      "auth",
      { cause: error },
    );
  }
  const parsed = utils.parseKey(data, passphrase);
  if (parsed instanceof Error) throw keyError(subject, path, parsed, passphrase !== undefined);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || !key.isPrivateKey()) {
    throw new TransportError(`Cannot use ${subject}: it holds no private key`, "auth");
  }
  // Some keys parse but cannot sign under Deno's crypto: find out now.
  const signature: Buffer | Error = key.sign(Buffer.from("contentmonster key check"));
  if (signature instanceof Error) throw signError(subject, path, key.type, signature);
  return key;
}

function keyError(subject: string, path: string, error: Error, hadPassphrase: boolean) {
  const quoted = JSON.stringify(path);
  let message: string;
  if (/no passphrase given/i.test(error.message)) {
    message = `Cannot use ${subject}: it is encrypted; set Passphrase (or PassphraseFile)`;
  } else if (hadPassphrase && /passphrase|integrity check|malformed/i.test(error.message)) {
    message = `Cannot use ${subject}: Passphrase does not decrypt it (${error.message})`;
  } else if (/unsupported key format/i.test(error.message)) {
    message = `Cannot use ${subject}: its format is not supported (PKCS#8 or unknown); ` +
      `convert it with ssh-keygen -p -m PEM -f ${quoted}, or use an ed25519 key`;
  } else {
    message = `Cannot parse ${subject}: ${error.message}`;
  }
  return new TransportError(message, "auth", { cause: error });
}

function signError(subject: string, path: string, type: string, error: Error) {
  const quoted = JSON.stringify(path);
  let message: string;
  if (/SEC1/i.test(error.message)) {
    message = `Cannot use ${subject}: this OpenSSH-format ${type} key cannot sign under Deno ` +
      `(${error.message}); rewrite it in PEM format with ssh-keygen -p -m PEM -f ${quoted}, ` +
      `or use an ed25519 key`;
  } else if (/DECODER|unsupported/i.test(error.message)) {
    message = `Cannot use ${subject}: this encrypted PEM ${type} key cannot be decrypted under ` +
      `Deno (${error.message}); convert it to the OpenSSH format with ssh-keygen -p -f ${quoted}, ` +
      `or use an ed25519 key`;
  } else {
    message = `Cannot use ${subject}: signing with this ${type} key fails (${error.message}); ` +
      `use an ed25519 key`;
  }
  return new TransportError(message, "auth", { cause: error });
}

async function isSocket(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isSocket === true;
  } catch {
    return false;
  }
}
