/**
 * With Fsync = yes, the local transport flushes the destination directory
 * after the rename, seen by tracing a process that publishes.
 */
import assert from "node:assert/strict";
import { straceMissing, traceScript } from "./strace.ts";

Deno.test({
  name: "LocalTransport.publish() with Fsync fsyncs the destination directory after the rename",
  ignore: straceMissing !== undefined,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "cm-local-fsync-" });
    try {
      const transport = JSON.stringify(import.meta.resolve("../transports/local.ts"));
      const helpers = JSON.stringify(import.meta.resolve("./helpers.ts"));
      const script = `
        const { LocalTransport } = await import(${transport});
        const { localVessel } = await import(${helpers});
        const t = new LocalTransport(localVessel("v", ${JSON.stringify(root)}, { fsync: true }));
        const a = await t.putWhole("0123456789ab-1", "/srv/in/durable.bin", new Uint8Array(10));
        await t.publish(a.tempPath, "/srv/in/durable.bin", 0o644);`;
      const { code, lines } = await traceScript(script, [
        "openat",
        "rename",
        "renameat",
        "renameat2",
        "fsync",
      ]);
      assert.equal(code, 0, lines.slice(-20).join("\n"));
      const rename = lines.findIndex((line) => /rename.*durable\.bin/.test(line));
      assert.ok(rename >= 0, "no rename traced");
      const open = lines.findIndex((line, i) =>
        i > rename && line.includes(`"${root}/srv/in", O_RDONLY`)
      );
      assert.ok(open > rename, "the directory was not opened after the rename");
      // Deno syncs through a duplicate of the descriptor, so only the order is checked.
      assert.ok(
        lines.slice(open).some((line) => /fsync\(\d+\)\s*= 0/.test(line)),
        "no fsync after the directory was opened",
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
