/**
 * A grouped commit is answered only once the WAL holding it is on disk, seen
 * by tracing a process that waits for one: a move into `processed/` waits for
 * that answer, and must not outrun the record that the file was delivered.
 */
import assert from "node:assert/strict";
import { straceMissing, traceScript } from "../../tests/strace.ts";

const ANSWERED = "GROUPED-COMMIT-ANSWERED";

Deno.test({
  name: "Store.grouped() answers after the WAL's flush, which began after the commit's write",
  ignore: straceMissing !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-wal-sync-" });
    try {
      const store = JSON.stringify(import.meta.resolve("./store.ts"));
      const script = `
        const { Store } = await import(${store});
        const store = await Store.open(${JSON.stringify(`${dir}/cm.db`)});
        store.enqueue("out", "f.bin", 1, 1, ["v"]);
        const [delivery] = store.deliveryNames();
        await store.grouped(() => store.markDelivered(delivery.id, 1));
        Deno.stderr.writeSync(new TextEncoder().encode(${JSON.stringify(`${ANSWERED}\n`)}));
        store.close();`;
      const { code, lines } = await traceScript(
        script,
        ["pwrite64", "write", "fsync", "fdatasync"],
        ["-y"], // names the file of each descriptor
      );
      assert.equal(code, 0, lines.slice(-20).join("\n"));
      // The traced write, not the text itself, which shares strace's stream.
      const answered = lines.findIndex((line) => /write\(2</.test(line) && line.includes(ANSWERED));
      assert.ok(answered > 0, "the answer was not traced");
      const commit = lines.findLastIndex((line, i) =>
        i < answered && /pwrite64\(\d+<[^>]*cm\.db-wal>/.test(line)
      );
      assert.ok(commit >= 0, "the grouped commit wrote nothing to the WAL");
      const flushStart = lines.findIndex((line, i) =>
        i > commit && /f(data)?sync\(\d+<[^>]*cm\.db-wal>/.test(line)
      );
      assert.ok(
        flushStart > commit && flushStart < answered,
        "no flush of the WAL between the commit and its answer",
      );
      // On another thread the flush may show as begun and, later, resumed.
      const pid = /^\[pid\s+(\d+)\]/.exec(lines[flushStart])?.[1];
      const flushEnd = lines[flushStart].includes("<unfinished ...>")
        ? lines.findIndex((line, i) =>
          i > flushStart && line.startsWith(`[pid ${pid}] <... f`) && line.includes("resumed")
        )
        : flushStart;
      assert.ok(flushEnd >= flushStart && flushEnd < answered, "answered before the flush ended");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
