/**
 * How ContentMonster runs the system's OpenSSH client for a vessel: which
 * binary, which options (settings.ini first, ssh_config for what it leaves
 * out), the environment, and a private directory for the connection sockets
 * and the password helper.
 *
 * Passwords never reach a command line or an environment: `SSH_ASKPASS`
 * names a helper script that prints a 0600 file in that 0700 directory, and
 * the file exists only while a login is in progress.
 *
 * @module
 */
import type { AuthEnvironment } from "./auth.ts";
import type { SftpVessel, SshClientKind } from "./options.ts";
import { PrivateSshDirectory } from "./ssh_private_dir.ts";

/** One login's secrets, readable by the `ssh_askpass` helper until `hide()`. */
export interface SecretsExposed {
  /** The environment of this login's `ssh`: {@linkcode OpenSshSetup.env} and where its secrets are. */
  readonly env: Record<string, string>;
  /** Removes this login's secrets; safe to call more than once. */
  hide(): Promise<void>;
}

/** Everything needed to start `ssh` for one vessel. */
export interface OpenSshSetup {
  /** Absolute path of the `ssh` binary. */
  readonly command: string;
  /** Options for every `ssh` run, before the host. */
  readonly options: readonly string[];
  /** The host argument: settings.ini's Address, maybe a `Host` alias of ssh_config. */
  readonly host: string;
  /** `user@hostname:port` after ssh_config, for messages. */
  readonly target: string;
  /** StrictHostKeyChecking as it applies (ssh_config's `ask` becomes `yes`). */
  readonly hostKeyPolicy: string;
  /** The known_hosts files ssh reads, for messages. */
  readonly knownHosts: string;
  /**
   * Whether `line`, of ssh's stderr, says that the vessel accepted the login.
   * Behind a jump host (ProxyJump) the jump host's ssh writes to the same
   * stderr, and its own "Authenticated to" came first: the login's secrets
   * were removed then, before the vessel asked for its password.
   */
  isVesselAuthenticated(line: string): boolean;
  /** The environment of every `ssh` run. */
  readonly env: Record<string, string>;
  /** A private (0700) directory for control sockets; removed by {@linkcode dispose}. */
  readonly dir: string;
  /**
   * Readies one login: the private directory (checked to be still ours), and
   * this login's own copy of the secrets where the helper finds them;
   * returns the environment of its `ssh` and the secrets' removal.
   */
  exposeSecrets(): Promise<SecretsExposed>;
  /** Removes the private directory. */
  dispose(): Promise<void>;
}

/** ssh_config's built-in cipher order; AES-GCM first when the CPU has AES-NI. */
const AES_FIRST = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com";

/**
 * The `ssh` binary for `command` (an absolute path, or a name looked up on
 * PATH), or `undefined` if there is none.
 */
export function findSsh(command = "ssh"): string | undefined {
  return findExecutable(command);
}

/** The executable `command` (an absolute path, or a name looked up on PATH), if there is one. */
export function findExecutable(command: string): string | undefined {
  const candidates = command.includes("/")
    ? [command]
    : (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").filter(Boolean).map((dir) =>
      `${dir}/${command}`
    );
  for (const path of candidates) {
    try {
      const info = Deno.statSync(path);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

/**
 * The SSH client a vessel's connections use (`SSHClient`, else OpenSSH when
 * there is an `ssh` binary), and that binary if there is one.
 */
export function chooseCarrier(vessel: SftpVessel): { carrier: SshClientKind; ssh?: string } {
  const ssh = findSsh(vessel.sshCommand);
  return { carrier: vessel.sshClient ?? (ssh ? "openssh" : "builtin"), ssh };
}

/** What `ssh -G` resolves for a vessel, with its settings.ini options and without. */
interface SshConfigAnswers {
  /** The options from settings.ini that the answers were asked with. */
  readonly options: readonly string[];
  readonly resolved: Promise<Map<string, string>>;
  /** OpenSSH's own defaults (`-F none`), undefined if they could not be read. */
  readonly defaults: Promise<Map<string, string> | undefined>;
}

/** Answers asked by {@linkcode askSshConfigAhead}, each for the vessel's first setup. */
const askedAhead = new WeakMap<SftpVessel, { command: string; answers: SshConfigAnswers }>();

/**
 * Asks `ssh -G` about `vessel` now, if its carrier will be OpenSSH: its
 * first login need not then wait for these process starts after the login
 * modules load, but overlaps them (loopback: 30-40 ms of a start).
 */
export function askSshConfigAhead(vessel: SftpVessel): void {
  const { carrier, ssh } = chooseCarrier(vessel);
  if (carrier !== "openssh" || !ssh || !vessel.address) return;
  const answers = askSshConfig(vessel, ssh);
  answers.resolved.catch(() => {}); // The setup that takes them reports a failure.
  askedAhead.set(vessel, { command: ssh, answers });
}

/** All questions at once: each costs a process start before the first login. */
function askSshConfig(vessel: SftpVessel, command: string): SshConfigAnswers {
  const host = vessel.address!;
  const defaulted = new Set(vessel.defaulted ?? []);
  const options: string[] = [];
  if (vessel.sshConfigFile !== undefined) options.push("-F", vessel.sshConfigFile);
  if (!defaulted.has("port")) options.push("-p", String(vessel.port));
  if (!defaulted.has("username")) options.push("-l", vessel.username);
  if (vessel.identityFile !== undefined) options.push("-i", vessel.identityFile);
  if (!defaulted.has("knownHostsFile")) {
    options.push("-o", `UserKnownHostsFile=${sshWord(vessel.knownHostsFile)}`);
  }
  if (!defaulted.has("strictHostKeyChecking")) {
    options.push("-o", `StrictHostKeyChecking=${vessel.strictHostKeyChecking}`);
  }
  void hasAesInstructions();
  return {
    options,
    resolved: sshDashG(command, options, host),
    defaults: sshDashG(command, ["-F", "none"], host).catch(() => undefined),
  };
}

/**
 * Resolves the options of `ssh` for `vessel` with `ssh -G`, so keys absent
 * from settings.ini come from ssh_config as they would for `ssh` itself.
 */
export async function prepareOpenSsh(
  vessel: SftpVessel,
  command: string,
  environment?: AuthEnvironment,
): Promise<OpenSshSetup> {
  if (!vessel.address) throw new TypeError(`Vessel "${vessel.name}" has no Address`);
  const host = vessel.address;
  const ahead = askedAhead.get(vessel);
  askedAhead.delete(vessel); // A setup tried again asks again: ssh_config may have been fixed.
  const answers = ahead?.command === command ? ahead.answers : askSshConfig(vessel, command);
  const options = [...answers.options];
  const aes = hasAesInstructions();
  const defaults = answers.defaults;
  const resolved = await answers.resolved;
  const policy = resolved.get("stricthostkeychecking") ?? "ask";
  const hostKeyPolicy = policy === "false" ? "no" : policy === "accept-new" ? policy : "yes";
  if (policy === "ask") options.push("-o", "StrictHostKeyChecking=yes");
  // Right for a tunnel host (`ssh -fN`), fatal to SFTP over ssh's pipes: ssh would read
  // /dev/null or go to the background. Only an ssh that knows the keys prints them (8.7+),
  // and only such an ssh accepts them.
  for (
    const [key, option] of [
      ["stdinnull", "StdinNull=no"],
      ["forkafterauthentication", "ForkAfterAuthentication=no"],
    ]
  ) {
    if (resolved.has(key)) options.push("-o", option);
  }
  if ((resolved.get("connecttimeout") ?? "none") === "none") {
    options.push("-o", `ConnectTimeout=${Math.max(1, Math.ceil(vessel.timeout))}`);
  }
  if (usesDefaultCiphers(options, resolved, await defaults) && await aes) {
    // Measured on this 2-core machine: scp with aes128-gcm 355 MiB/s, with the default
    // chacha20-poly1305 183 MiB/s. Only when ssh_config does not choose the ciphers.
    options.push("-o", `Ciphers=${AES_FIRST}`);
  }
  const secrets = vessel.password !== undefined || vessel.passphrase !== undefined;
  if (secrets && vessel.password === undefined) {
    // Without a Password only the key's passphrase is asked: no prompt of the vessel's.
    options.push("-o", "KbdInteractiveAuthentication=no", "-o", "PasswordAuthentication=no");
  }
  options.push(
    // Nothing of the operator's interactive set-up may follow us to a vessel.
    "-o",
    "ForwardAgent=no",
    "-o",
    "ForwardX11=no",
    "-o",
    "ClearAllForwardings=yes",
    "-o",
    "PermitLocalCommand=no",
    "-o",
    "RemoteCommand=none",
    "-o",
    "RequestTTY=no",
    "-o",
    secrets ? "NumberOfPasswordPrompts=1" : "BatchMode=yes",
  );

  if (!vessel.defaulted?.includes("knownHostsFile") && hostKeyPolicy !== "yes") {
    // ssh records new keys only in a directory that exists; the builtin client creates it too.
    const parent = vessel.knownHostsFile.slice(0, vessel.knownHostsFile.lastIndexOf("/"));
    if (parent) await Deno.mkdir(parent, { recursive: true, mode: 0o700 });
    // ssh would create it world-readable (umask); the builtin client makes it 0600.
    await Deno.writeTextFile(vessel.knownHostsFile, "", { append: true, mode: 0o600 });
  }
  const privateDir = await PrivateSshDirectory.create();
  const dir = privateDir.path;
  const env: Record<string, string> = { ...Deno.env.toObject() };
  delete env.DISPLAY;
  if (environment) {
    // The agent ssh asks; ssh finds ~/.ssh through the password database, not HOME.
    if (environment.agentSocket) env.SSH_AUTH_SOCK = environment.agentSocket;
    else delete env.SSH_AUTH_SOCK;
  }
  const askpass = `${dir}/askpass`;
  const askpassText = askpassScript();
  const user = resolved.get("user") ?? vessel.username;
  const hostname = resolved.get("hostname") ?? host;
  const port = resolved.get("port") ?? String(vessel.port);
  const proxied = ["proxyjump", "proxycommand"].some((key) =>
    (resolved.get(key) ?? "none") !== "none"
  );
  if (secrets) {
    env.SSH_ASKPASS = askpass;
    env.SSH_ASKPASS_REQUIRE = "force";
    // The login whose password prompts the helper answers, as ssh names it in them. A jump
    // host's ssh (ProxyJump, or ssh in a ProxyCommand) inherits this environment and asked
    // the helper too: it was handed the vessel's password.
    env.CONTENTMONSTER_LOGIN = `${user}@${resolved.get("hostkeyalias") ?? hostname}`;
    if (proxied) env.CONTENTMONSTER_PROXIED = "1";
    else delete env.CONTENTMONSTER_PROXIED;
  }
  let logins = 0;
  return {
    command,
    options,
    host,
    target: `${user}@${hostname}:${port}`,
    hostKeyPolicy,
    knownHosts: resolved.get("userknownhostsfile") ?? vessel.knownHostsFile,
    // ssh's own connection is not a socket behind a proxy, and it says so; a jump host's
    // ssh names its [address]:port instead (and a second jump host its own name).
    isVesselAuthenticated: (line) =>
      /^(debug1: )?Authenticated to /.test(line) &&
      (!proxied || line.includes(`Authenticated to ${hostname} (via proxy) `)),
    env,
    dir,
    async exposeSecrets() {
      // Made again if something emptied the temp directory meanwhile (ssh binds its control
      // socket here on every connection), and refused if someone else made it since.
      await privateDir.ensure();
      if (!secrets) return { env, hide: () => Promise.resolve() };
      // Written once per directory: replacing it could fail a login running it meanwhile.
      await Deno.writeTextFile(askpass, askpassText, { mode: 0o700, createNew: true }).catch(
        (error) => {
          if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
        },
      );
      // Each login its own copy: logins that start together neither collide on one file
      // nor remove it under each other.
      const prefix = `${dir}/login${++logins}`;
      const written: string[] = [];
      for (
        const [name, secret] of [["password", vessel.password], [
          "passphrase",
          vessel.passphrase,
        ]] as const
      ) {
        if (secret === undefined) continue;
        await writePrivateFile(`${prefix}.${name}`, secret.reveal(), 0o600);
        written.push(`${prefix}.${name}`);
      }
      // Called when ssh authenticates, when it exits, and once it serves SFTP: removes once.
      let removal: Promise<void> | undefined;
      return {
        env: { ...env, CONTENTMONSTER_SECRETS: prefix },
        hide: () =>
          removal ??= Promise.all(written.map((path) => Deno.remove(path).catch(() => {})))
            .then(() => {}),
      };
    },
    dispose: () => privateDir.dispose(),
  };
}

/**
 * The `ssh_askpass` helper: the passphrase for ssh's own prompt for a key,
 * the password for a prompt that asks for one, nothing for any other
 * question; from the files of its login (`CONTENTMONSTER_SECRETS`). A vessel
 * writes the text of keyboard-interactive prompts: matched anywhere in the
 * prompt, "Enter passphrase:" from a vessel got the key's passphrase. ssh
 * 8.4 and later put "(user@host) " before such prompts, so only ssh's own
 * prompt starts with its words; older ones get no keyboard-interactive
 * login without a Password (see the options).
 *
 * Through a jump host the password goes only to a prompt that names the
 * vessel's login (`CONTENTMONSTER_LOGIN`): ssh's `user@host's password: `,
 * or `(user@host) ` before a keyboard-interactive one; the jump host's ssh
 * runs this helper too, and it got the password. Without a jump host only
 * ssh's own login asks, and older ssh's bare keyboard-interactive prompts
 * still get it.
 */
function askpassScript(): string {
  return [
    "#!/bin/sh",
    "# ContentMonster's SSH_ASKPASS helper: answers only password and passphrase prompts.",
    'case "$1" in',
    `"Enter passphrase for key '"*) name=passphrase ;;`,
    "*[Pp]assphrase*) exit 1 ;;",
    `"$CONTENTMONSTER_LOGIN's password: "|"($CONTENTMONSTER_LOGIN) "*[Pp]assword*) name=password ;;`,
    '*[Pp]assword*) [ -z "$CONTENTMONSTER_PROXIED" ] || exit 1; name=password ;;',
    "*) exit 1 ;;",
    "esac",
    'exec cat -- "$CONTENTMONSTER_SECRETS.$name"',
    "",
  ].join("\n");
}

/** Writes `text` to a new file `path` with `mode`, replacing what is there, never through a link. */
async function writePrivateFile(path: string, text: string, mode: number): Promise<void> {
  await Deno.remove(path).catch(() => {});
  await Deno.writeTextFile(path, text, { mode, createNew: true });
}

/** `ssh -G`: the configuration ssh would use, keys lower-cased. */
async function sshDashG(
  command: string,
  options: readonly string[],
  host: string,
): Promise<Map<string, string>> {
  const output = await new Deno.Command(command, {
    args: [...options, "-G", "--", host],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    const why = new TextDecoder().decode(output.stderr).trim() || `exit ${output.code}`;
    throw new Error(`${command} -G cannot read the SSH configuration: ${why}`);
  }
  const settings = new Map<string, string>();
  for (const line of text.split("\n")) {
    const space = line.indexOf(" ");
    if (space <= 0) continue;
    const key = line.slice(0, space).toLowerCase();
    if (!settings.has(key)) settings.set(key, line.slice(space + 1));
  }
  return settings;
}

/**
 * Whether ssh_config leaves the ciphers at OpenSSH's own default (`defaults`:
 * what `ssh -F none -G` resolves, undefined if it failed).
 */
function usesDefaultCiphers(
  options: readonly string[],
  resolved: Map<string, string>,
  defaults: Map<string, string> | undefined,
): boolean {
  return defaults !== undefined && defaults.get("ciphers") === resolved.get("ciphers") &&
    !options.some((option) => option.toLowerCase().startsWith("ciphers="));
}

/** Asked once per process. */
let aesInstructions: Promise<boolean> | undefined;

/**
 * Whether the CPU has AES instructions (x86's `aes` flag, Arm's `aes`
 * feature). `cat` reads /proc/cpuinfo: Deno lets only `--allow-all` read
 * /proc, and the daemon runs with narrower permissions.
 */
function hasAesInstructions(): Promise<boolean> {
  return aesInstructions ??= new Deno.Command("cat", {
    args: ["/proc/cpuinfo"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output().then(
    (output) =>
      output.success &&
      /^(flags|Features)\s*:(.* )?aes( |$)/m.test(new TextDecoder().decode(output.stdout)),
    () => false,
  );
}

/** A value for `ssh -o KEY=VALUE`, quoted when it holds spaces. */
function sshWord(value: string): string {
  return /[\s"]/.test(value) ? `"${value.replaceAll('"', '\\"')}"` : value;
}
