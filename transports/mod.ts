/** Chooses a vessel's transport by its `Transport =` key. */
import type { VesselConfig } from "../src/config/types.ts";
import { LocalTransport } from "./local.ts";
import type { Transport } from "./transport.ts";

export * from "./transport.ts";

/** Creates the transport for a vessel; it connects lazily on first use. */
export async function openTransport(vessel: VesselConfig): Promise<Transport> {
  switch (vessel.transport) {
    case "local":
      return new LocalTransport(vessel);
    case "sftp": {
      // Loaded on demand so the local transport never pays for ssh2.
      const { SftpTransport } = await import("./sftp/sftp_transport.ts");
      return new SftpTransport(vessel);
    }
  }
}
