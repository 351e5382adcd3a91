import { LocalTransport } from "../transports/local.ts";
import { transportConformance } from "./conformance.ts";
import { localVessel } from "./helpers.ts";

transportConformance("local", async () => {
  const root = await Deno.makeTempDir({ prefix: "cm-local-" });
  const vessel = localVessel("local", root);
  return {
    transport: new LocalTransport(vessel),
    base: "/srv/inbox",
    tempDir: vessel.tempDir,
    read: (path) => Deno.readFile(root + path).catch(() => undefined),
    list: async (path) => {
      try {
        return (await Array.fromAsync(Deno.readDir(root + path))).map((e) => e.name);
      } catch {
        return [];
      }
    },
    localPath: (path) => root + path,
    withTempDir: (tempDir) => new LocalTransport({ ...vessel, tempDir }),
    cleanup: () => Deno.remove(root, { recursive: true }),
  };
});
