/** The validated configuration the rest of the program works from. */
import type { ConfigLocation } from "./errors.ts";
import type { Secret } from "./secret.ts";

/** `[MONSTER]`: settings of the shore itself. */
export interface MonsterConfig {
  /** Bytes per part. */
  readonly chunkSize: number;
  /** Absolute path of the SQLite state database. */
  readonly database: string;
  /** Where `/metrics` is served, and the line that says so; off when absent. */
  readonly metricsAddress?: {
    readonly hostname: string;
    readonly port: number;
    readonly where: ConfigLocation;
  };
}

/** `[Directory NAME]`: one source directory on the shore. */
export interface DirectoryConfig {
  readonly name: string;
  /** Absolute path on the shore. */
  readonly location: string;
  /** Absolute path on every vessel (default: same as `location`). */
  readonly destination: string;
}

/** `StrictHostKeyChecking`, as OpenSSH means it. */
export type HostKeyPolicy = "yes" | "accept-new" | "no";

/** `SSHClient`: which SSH implementation carries SFTP. */
export type SshClientKind = "openssh" | "builtin";

/** Settings of a vessel that hold ContentMonster's default because settings.ini left them out. */
export type DefaultedSetting = "port" | "username" | "knownHostsFile" | "strictHostKeyChecking";

/** `[Vessel NAME]`: one destination server. */
export interface VesselConfig {
  readonly name: string;
  readonly transport: "sftp" | "local";
  /** Local transport: the shore path where the vessel's `/` lies. */
  readonly root?: string;
  readonly address?: string;
  readonly port: number;
  readonly username: string;
  readonly password?: Secret;
  readonly passphrase?: Secret;
  readonly identityFile?: string;
  readonly knownHostsFile: string;
  readonly strictHostKeyChecking: HostKeyPolicy;
  /** Absolute vessel path where parts are uploaded. */
  readonly tempDir: string;
  /** Names of directories not replicated to this vessel. */
  readonly ignoreDirs: readonly string[];
  /** Seconds: connect timeout and idle detection. */
  readonly timeout: number;
  /** Whether to fsync a file before publishing it. */
  readonly fsync: boolean;
  /** SSH connections: `auto` (also when absent) follows the link, up to 16; a number fixes them. */
  readonly connections?: number | "auto";
  /** Bytes per second uploads to this vessel may average; unlimited when absent. */
  readonly bandwidthLimit?: number;
  /** The SSH carrier; absent: `openssh` when an `ssh` binary is found, else `builtin`. */
  readonly sshClient?: SshClientKind;
  /** The `ssh` binary: an absolute path, or a name looked up on PATH. */
  readonly sshCommand?: string;
  /** The ssh_config(5) file for `openssh`, or `none`; absent: ssh's own default. */
  readonly sshConfigFile?: string;
  /** Which of port, username, known hosts file and host key policy are defaults (see DefaultedSetting). */
  readonly defaulted?: readonly DefaultedSetting[];
}

/** The whole validated `settings.ini`. */
export interface Config {
  /** Absolute path of the file it was read from. */
  readonly path: string;
  readonly monster: MonsterConfig;
  readonly directories: readonly DirectoryConfig[];
  readonly vessels: readonly VesselConfig[];
  /** Non-fatal problems (unknown keys), to be logged once at start. */
  readonly warnings: readonly string[];
}
