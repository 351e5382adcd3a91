/**
 * Chooses a vessel's transport by its `Transport =` key and, for SFTP, its
 * SSH carrier by `SSHClient =`.
 *
 * @module
 */
import type { LocalVessel } from "./local.ts";
import type { SftpVessel } from "./sftp/options.ts";
import { silentLogger, type Transport, type TransportLogger } from "./transport.ts";

export * from "./transport.ts";
export type { LocalVessel } from "./local.ts";
export type { SftpVessel, SshClientKind } from "./sftp/options.ts";

/** A vessel as the engine's config describes it: what every transport may need. */
export interface VesselSettings extends LocalVessel, SftpVessel {
  readonly transport: "sftp" | "local";
}

/** Creates the transport for a vessel; it connects lazily on first use. */
export async function openTransport(
  vessel: VesselSettings,
  log: TransportLogger = silentLogger,
): Promise<Transport> {
  switch (vessel.transport) {
    case "local": {
      const { LocalTransport } = await import("./local.ts");
      return new LocalTransport(vessel);
    }
    case "sftp": {
      // ssh_config is read while the SFTP modules load (a few ms to load this one).
      (await import("./sftp/openssh_setup.ts")).askSshConfigAhead(vessel);
      // Loaded on demand so the local transport never pays for ssh2.
      const { SftpTransport } = await import("./sftp/sftp_transport.ts");
      return new SftpTransport(vessel, { log });
    }
  }
}
