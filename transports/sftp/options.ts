/**
 * What the SFTP transport needs to know about a vessel. The engine's vessel
 * config fits it as it is; `transports/mod.ts` passes it through.
 *
 * @module
 */

/** `StrictHostKeyChecking`, as OpenSSH means it. */
export type HostKeyPolicy = "yes" | "accept-new" | "no";

/** Which SSH implementation carries the SFTP session and the remote commands. */
export type SshClientKind = "openssh" | "builtin";

/** A secret that shows its value only when asked, so it never lands in a log by accident. */
export interface SecretValue {
  reveal(): string;
}

/** Settings that ContentMonster defaulted because settings.ini left them out. */
export type DefaultedSetting = "port" | "username" | "knownHostsFile" | "strictHostKeyChecking";

/** A vessel reached over SSH/SFTP. */
export interface SftpVessel {
  readonly name: string;
  readonly address?: string;
  readonly port: number;
  readonly username: string;
  readonly password?: SecretValue;
  readonly passphrase?: SecretValue;
  readonly identityFile?: string;
  readonly knownHostsFile: string;
  readonly strictHostKeyChecking: HostKeyPolicy;
  /** Absolute vessel path where parts are uploaded. */
  readonly tempDir: string;
  /** Seconds: connect timeout and idle detection. */
  readonly timeout: number;
  /** Whether to fsync a file before publishing it. */
  readonly fsync: boolean;
  /** SSH connections: `auto` (default) follows the link, a number fixes them. */
  readonly connections?: number | "auto";
  /** The SSH carrier; default: `openssh` when an `ssh` binary is found, else `builtin`. */
  readonly sshClient?: SshClientKind;
  /** The `ssh` binary of the `openssh` carrier (default: `ssh` on PATH). */
  readonly sshCommand?: string;
  /** ssh_config(5) file of the `openssh` carrier; `none` ignores every config file. */
  readonly sshConfigFile?: string;
  /**
   * Settings above that hold ContentMonster's default, not the operator's
   * choice: the `openssh` carrier takes them from ssh_config instead.
   * Absent: every setting was chosen.
   */
  readonly defaulted?: readonly DefaultedSetting[];
}
