/**
 * The conformance suite every transport passes unchanged. A transport's test
 * file opens a fresh target and calls {@linkcode transportConformance}.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  assembleAll,
  type PartData,
  tempPathFor,
  type Transport,
  TransportError,
} from "../transports/transport.ts";

/** A transport under test and a way to look at the vessel behind it. */
export interface ConformanceTarget {
  transport: Transport;
  /** Absolute vessel path of a fresh, empty directory for destinations. */
  base: string;
  /** The vessel's TempDir as configured (absolute vessel path). */
  tempDir: string;
  /** Bytes of a vessel file, `undefined` if it does not exist. */
  read(vesselPath: string): Promise<Uint8Array | undefined>;
  /** Names in a vessel directory, `[]` if it does not exist. */
  list(vesselPath: string): Promise<string[]>;
  /** Where a vessel path lies on this machine, to plant links and read modes. */
  localPath(vesselPath: string): string;
  /** Another transport to the same vessel, with TempDir `tempDir`; the caller closes it. */
  withTempDir(tempDir: string): Transport;
  cleanup(): Promise<void>;
}

/** Names an operator will meet sooner or later. */
export const HOSTILE_NAMES = [
  "plain.txt",
  "with space.txt",
  'it\'s "quoted".txt',
  "$HOME and $(id) and `id`.txt",
  "new\nline.txt",
  "-leading-dash.txt",
  "--help",
  "ünïcødé 文件 🚀.bin",
  "semi;colon & pipe | star * ? [x].txt",
  "back\\slash.txt",
];

const encoder = new TextEncoder();

function sha256(...chunks: Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const chunk of chunks) hash.update(chunk);
  return hash.digest("hex");
}

function bytes(length: number, seed: number): Uint8Array {
  const data = new Uint8Array(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    data[i] = state >>> 24;
  }
  return data;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isCode(code: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.code, code, error.message);
    assert.equal(error.retryable, true);
    return true;
  };
}

function isUnsafe(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.code, "unsafe", error.message);
    assert.equal(error.retryable, false);
    assert.match(error.message, pattern);
    return true;
  };
}

let keyCounter = 0;
function freshKey(): string {
  return `conf-${Date.now().toString(36)}-${(keyCounter++).toString(36)}`;
}

/** Registers the shared conformance tests for one transport. */
export function transportConformance(
  name: string,
  open: () => Promise<ConformanceTarget>,
  options: { ignore?: boolean } = {},
): void {
  Deno.test({
    name: `${name} transport conformance`,
    ignore: options.ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      const target = await open();
      const { transport, base } = target;
      try {
        await t.step("parts put out of order assemble in order and publish", async () => {
          const key = freshKey();
          const destination = `${base}/nested/deeper/file.bin`;
          const parts = [bytes(1000, 1), bytes(70_000, 2), bytes(3, 3)];
          assert.deepEqual([...await transport.prepare(key, destination)], [], "a new part dir");
          for (const index of [2, 0, 1]) await transport.putPart(key, index, parts[index]);
          assert.deepEqual([...await transport.listParts(key)].sort(), [0, 1, 2]);
          assert.deepEqual([...await transport.prepare(key, destination)].sort(), [0, 1, 2]);
          const assembled = await assembleAll(transport, key, 3, destination);
          assert.equal(assembled.tempPath, tempPathFor(key, destination));
          assert.equal(assembled.sha256, sha256(...parts));
          assert.equal(assembled.size, 71_003);
          assert.equal(await target.read(destination), undefined, "visible before publish");
          const tempName = assembled.tempPath.slice(assembled.tempPath.lastIndexOf("/") + 1);
          assert.ok(tempName.startsWith("."), "temp name must be hidden");
          await transport.publish(assembled.tempPath, destination);
          const onVessel = await target.read(destination);
          assert.ok(onVessel);
          assert.equal(sha256(onVessel), sha256(...parts));
          assert.equal(await target.read(assembled.tempPath), undefined);
          await transport.removeParts(key);
          assert.deepEqual([...await transport.listParts(key)], []);
          assert.ok(!(await target.list(target.tempDir)).includes(key), "part dir left behind");
        });

        await t.step("hostile names replicate byte-identical", async () => {
          for (const [i, fileName] of HOSTILE_NAMES.entries()) {
            const key = freshKey();
            const destination = `${base}/dir with 'quote' $x/${fileName}`;
            const data = encoder.encode(`content of ${fileName}\n`);
            await transport.prepare(key, destination);
            await transport.putPart(key, 0, data);
            const assembled = await assembleAll(transport, key, 1, destination);
            assert.equal(assembled.sha256, sha256(data), `hash of ${JSON.stringify(fileName)}`);
            await transport.publish(assembled.tempPath, destination);
            assert.deepEqual(await target.read(destination), data, `bytes of #${i}`);
            assert.equal(await transport.hash(destination), sha256(data));
            await transport.removeParts(key);
          }
          const names = await target.list(`${base}/dir with 'quote' $x`);
          assert.deepEqual(names.sort(), [...HOSTILE_NAMES].sort());
        });

        await t.step("a zero-length file is one empty part", async () => {
          const key = freshKey();
          const destination = `${base}/empty`;
          await transport.prepare(key, destination);
          await transport.putPart(key, 0, new Uint8Array(0));
          const assembled = await assembleAll(transport, key, 1, destination);
          assert.equal(assembled.size, 0);
          assert.equal(assembled.sha256, sha256());
          await transport.publish(assembled.tempPath, destination);
          assert.deepEqual(await target.read(destination), new Uint8Array(0));
          await transport.removeParts(key);
        });

        await t.step("assembly with a missing part leaves nothing behind", async () => {
          const key = freshKey();
          const destination = `${base}/missing-part.bin`;
          await transport.prepare(key, destination);
          await transport.putPart(key, 0, bytes(100, 4));
          await transport.putPart(key, 2, bytes(100, 5));
          await assert.rejects(
            () => assembleAll(transport, key, 3, destination),
            isCode("part-missing"),
          );
          assert.equal(await target.read(destination), undefined);
          assert.equal(await target.read(tempPathFor(key, destination)), undefined);
          assert.deepEqual((await target.list(base)).filter((n) => n.startsWith(".")), []);
          await transport.removeParts(key);
        });

        await t.step("putting a part again replaces it", async () => {
          const key = freshKey();
          const destination = `${base}/reput.bin`;
          await transport.prepare(key, destination);
          await transport.putPart(key, 0, bytes(5000, 6));
          await transport.putPart(key, 0, bytes(10, 7));
          await transport.putPart(key, 0, bytes(10, 7));
          assert.deepEqual([...await transport.listParts(key)], [0]);
          const assembled = await assembleAll(transport, key, 1, destination);
          assert.equal(assembled.sha256, sha256(bytes(10, 7)));
          assert.equal(assembled.size, 10);
          await transport.remove(assembled.tempPath);
          assert.equal(await target.read(assembled.tempPath), undefined);
          await transport.removeParts(key);
        });

        await t.step("a part read as it is sent is stored whole, a bit at a time", async () => {
          const key = freshKey();
          const destination = `${base}/streamed.bin`;
          const data = bytes(5 << 20, 21);
          let largestRead = 0;
          const streamed: PartData = {
            byteLength: data.length,
            read: async (offset, into) => {
              await delay(0);
              largestRead = Math.max(largestRead, into.length);
              into.set(data.subarray(offset, offset + into.length));
              return into;
            },
          };
          await transport.prepare(key, destination);
          await transport.putPart(key, 0, streamed);
          assert.ok(
            largestRead > 0 && largestRead <= 1 << 20,
            `the whole part was asked for at once (${largestRead} bytes), not as it was sent`,
          );
          const assembled = await assembleAll(transport, key, 1, destination);
          assert.equal(assembled.sha256, sha256(data));
          assert.equal(assembled.size, data.length);
          await transport.remove(assembled.tempPath);

          // A source that fails mid-part (it shrank) fails the put and leaves no part.
          const failing: PartData = {
            byteLength: data.length,
            read: async (offset, into) => {
              await delay(0);
              if (offset >= 2 << 20) throw new Error("the source shrank");
              into.set(data.subarray(offset, offset + into.length));
              return into;
            },
          };
          await assert.rejects(() => transport.putPart(key, 1, failing), /the source shrank/);
          assert.deepEqual([...await transport.listParts(key)], [0]);
          await transport.removeParts(key);
        });

        await t.step("publish replaces an existing file", async () => {
          const key = freshKey();
          const destination = `${base}/replace.txt`;
          for (const version of ["old version", "new version, longer"]) {
            await transport.prepare(key, destination);
            await transport.putPart(key, 0, encoder.encode(version));
            const assembled = await assembleAll(transport, key, 1, destination);
            await transport.publish(assembled.tempPath, destination);
            await transport.removeParts(key);
          }
          assert.deepEqual(await target.read(destination), encoder.encode("new version, longer"));
        });

        await t.step("removing parts by count also removes what else was left", async () => {
          const key = freshKey();
          await transport.prepare(key, `${base}/counted.bin`);
          for (const index of [0, 1]) await transport.putPart(key, index, bytes(100, index));
          // A part cut mid-way by a lost connection, and one of a larger earlier try.
          await Deno.writeFile(
            `${target.localPath(`${target.tempDir}/${key}`)}/2.part.tmp`,
            bytes(9, 9),
          );
          await Deno.writeFile(
            `${target.localPath(`${target.tempDir}/${key}`)}/5.part`,
            bytes(9, 9),
          );
          await transport.removeParts(key, 2);
          assert.ok(!(await target.list(target.tempDir)).includes(key), "part dir left behind");
          await transport.prepare(key, `${base}/counted.bin`);
          await transport.putPart(key, 0, bytes(100, 0));
          await transport.removeParts(key, 2); // Part 1 is not there: no error.
          assert.ok(!(await target.list(target.tempDir)).includes(key), "part dir left behind");
        });

        await t.step(
          "absent things are no errors; hash of a missing file is undefined",
          async () => {
            const key = freshKey();
            assert.deepEqual([...await transport.listParts(key)], []);
            await transport.removeParts(key);
            await transport.remove(`${base}/does not exist`);
            assert.equal(await transport.hash(`${base}/does not exist`), undefined);
            await transport.prepare(key, `${base}/twice/x`);
            await transport.prepare(key, `${base}/twice/x`);
            await transport.removeParts(key);
          },
        );

        await t.step("putWhole writes hostile names straight to the temp name", async () => {
          const dir = `${base}/whole 'q' $x`;
          for (const [i, fileName] of HOSTILE_NAMES.entries()) {
            const key = freshKey();
            const destination = `${dir}/${fileName}`;
            const data = encoder.encode(`whole ${fileName}\n`.repeat(i + 1));
            const assembled = await transport.putWhole(key, destination, data);
            assert.equal(assembled.tempPath, tempPathFor(key, destination));
            assert.equal(assembled.sha256, sha256(data), `hash of ${JSON.stringify(fileName)}`);
            assert.equal(assembled.size, data.length);
            assert.deepEqual(await target.read(assembled.tempPath), data);
            assert.equal(await target.read(destination), undefined, "visible before publish");
            await transport.publish(assembled.tempPath, destination);
            assert.deepEqual(await target.read(destination), data, `bytes of #${i}`);
            assert.ok(!(await target.list(target.tempDir)).includes(key), "a part dir was made");
          }
          assert.deepEqual((await target.list(dir)).sort(), [...HOSTILE_NAMES].sort());
        });

        await t.step(
          "putWhole creates a new directory once for files arriving together",
          async () => {
            const dir = `${base}/whole-new/a/b`;
            const files = Array.from({ length: 8 }, (_, i) => bytes(1000 + i, 40 + i));
            await Promise.all(files.map(async (data, i) => {
              const destination = `${dir}/f${i}`;
              const assembled = await transport.putWhole(freshKey(), destination, data);
              assert.equal(assembled.sha256, sha256(data));
              await transport.publish(assembled.tempPath, destination);
            }));
            for (const [i, data] of files.entries()) {
              assert.deepEqual(await target.read(`${dir}/f${i}`), data);
            }
          },
        );

        await t.step(
          "putWhole of empty data and a zero-part assembly give empty files",
          async () => {
            const key = freshKey();
            const empty = await transport.putWhole(key, `${base}/whole-empty`, new Uint8Array(0));
            assert.equal(empty.size, 0);
            assert.equal(empty.sha256, sha256());
            assert.deepEqual(await target.read(empty.tempPath), new Uint8Array(0));
            await transport.remove(empty.tempPath);
            const assembly = transport.startAssembly(freshKey(), 0, `${base}/zero-parts`);
            const zero = await assembly.finish();
            assert.equal(zero.size, 0);
            assert.equal(zero.sha256, sha256());
            assert.deepEqual(await target.read(zero.tempPath), new Uint8Array(0));
            await assembly.abort();
            assert.equal(await target.read(zero.tempPath), undefined);
          },
        );

        await t.step("putWhole replaces an old temp file, bigger or smaller", async () => {
          const key = freshKey();
          const destination = `${base}/whole-replace.bin`;
          for (const data of [bytes(300_000, 8), bytes(10, 9), bytes(400_000, 10)]) {
            const assembled = await transport.putWhole(key, destination, data);
            assert.equal(assembled.sha256, sha256(data));
            assert.equal(assembled.size, data.length);
            assert.deepEqual(await target.read(assembled.tempPath), data);
          }
          await transport.remove(tempPathFor(key, destination));
        });

        await t.step("putWhole below a file fails and leaves nothing", async () => {
          const key = freshKey();
          const file = `${base}/whole-plain-file`;
          const placed = await transport.putWhole(key, file, encoder.encode("a file"));
          await transport.publish(placed.tempPath, file);
          const child = `${file}/child.txt`;
          await assert.rejects(
            () => transport.putWhole(key, child, encoder.encode("x")),
            (error: unknown) => {
              assert.ok(error instanceof TransportError, String(error));
              assert.ok(error.message.includes(JSON.stringify(child)), error.message);
              return true;
            },
          );
          assert.deepEqual(await target.read(file), encoder.encode("a file"));
          assert.deepEqual((await target.list(base)).filter((n) => n.startsWith(".")), []);
        });

        await t.step("startAssembly consumes parts announced out of order while put", async () => {
          const key = freshKey();
          const destination = `${base}/streamed/it's $x.bin`;
          const parts = Array.from({ length: 6 }, (_, i) => bytes(50_000 + i * 7_001, 20 + i));
          await transport.prepare(key, destination);
          const assembly = transport.startAssembly(key, parts.length, destination);
          assert.throws(() => assembly.partReady(parts.length), RangeError);
          assert.throws(() => assembly.partReady(-1), RangeError);
          await Promise.all([3, 1, 0, 5, 2, 4].map(async (index, position) => {
            await delay(position * 20);
            await transport.putPart(key, index, parts[index]);
            assembly.partReady(index);
            assembly.partReady(index); // Twice is harmless.
          }));
          const assembled = await assembly.finish();
          assert.equal(assembled.tempPath, tempPathFor(key, destination));
          assert.equal(assembled.sha256, sha256(...parts));
          assert.equal(assembled.size, parts.reduce((sum, part) => sum + part.length, 0));
          assert.deepEqual(await assembly.finish(), assembled);
          assert.equal(sha256((await target.read(assembled.tempPath))!), sha256(...parts));
          await transport.publish(assembled.tempPath, destination);
          await assembly.abort(); // After publishing: nothing to remove.
          assert.equal(sha256((await target.read(destination))!), sha256(...parts));
          await transport.removeParts(key);
        });

        await t.step("startAssembly of parts all present, announced late, in reverse", async () => {
          const key = freshKey();
          const destination = `${base}/streamed/late.bin`;
          const parts = [bytes(3000, 30), bytes(0, 31), bytes(5, 32)];
          await transport.prepare(key, destination);
          for (const [index, data] of parts.entries()) await transport.putPart(key, index, data);
          const assembly = transport.startAssembly(key, parts.length, destination);
          await delay(100);
          for (const index of [2, 1, 0]) assembly.partReady(index);
          const assembled = await assembly.finish();
          assert.equal(assembled.sha256, sha256(...parts));
          assert.equal(assembled.size, 3005);
          await transport.remove(assembled.tempPath);
          await transport.removeParts(key);
        });

        await t.step("abort stops an assembly and leaves nothing, also after finish", async () => {
          const key = freshKey();
          const destination = `${base}/aborted.bin`;
          await transport.prepare(key, destination);
          const assembly = transport.startAssembly(key, 3, destination);
          await transport.putPart(key, 0, bytes(20_000, 50));
          assembly.partReady(0);
          await delay(200);
          await assembly.abort();
          await assembly.abort();
          await assert.rejects(() => assembly.finish(), TransportError);
          assert.equal(await target.read(tempPathFor(key, destination)), undefined);
          assert.equal(await target.read(destination), undefined);

          const done = transport.startAssembly(key, 1, destination);
          done.partReady(0);
          const assembled = await done.finish();
          assert.ok(await target.read(assembled.tempPath));
          await done.abort();
          assert.equal(await target.read(assembled.tempPath), undefined);
          assert.deepEqual((await target.list(base)).filter((n) => n.startsWith(".")), []);
          await transport.removeParts(key);
        });

        await t.step("startAssembly rejects a missing part with part-missing", async () => {
          const key = freshKey();
          const destination = `${base}/stream-missing.bin`;
          await transport.prepare(key, destination);
          await transport.putPart(key, 0, bytes(100_000, 60));
          await transport.putPart(key, 2, bytes(100, 61));
          const assembly = transport.startAssembly(key, 3, destination);
          assembly.partReady(2);
          await delay(50);
          assembly.partReady(0);
          await delay(50);
          assembly.partReady(1); // Not there: part 1 was never put.
          await assert.rejects(() => assembly.finish(), isCode("part-missing"));
          await assembly.abort();
          assert.equal(await target.read(tempPathFor(key, destination)), undefined);
          assert.equal(await target.read(destination), undefined);
          assert.deepEqual((await target.list(base)).filter((n) => n.startsWith(".")), []);
          await transport.removeParts(key);
        });

        await t.step(
          "TempDir and part dirs are 0700, parts 0600, a file gets its mode once written whole",
          async () => {
            const mode = async (path: string) =>
              (await Deno.lstat(target.localPath(path))).mode! & 0o7777;
            const key = freshKey();
            const destination = `${base}/modes/file.bin`;
            await transport.prepare(key, destination);
            assert.equal(await mode(target.tempDir), 0o700);
            assert.equal(await mode(`${target.tempDir}/${key}`), 0o700);
            await transport.putPart(key, 0, bytes(10, 1));
            await transport.putPart(key, 1, bytes(300_000, 2));
            assert.equal(await mode(`${target.tempDir}/${key}/0.part`), 0o600);
            const assembled = await assembleAll(transport, key, 2, destination, 0o640);
            assert.equal(await mode(assembled.tempPath), 0o640);
            await transport.publish(assembled.tempPath, destination);
            assert.equal(await mode(destination), 0o640);
            await transport.removeParts(key);
            const plain = await transport.putWhole(freshKey(), `${base}/modes/plain`, bytes(5, 4));
            assert.equal(await mode(plain.tempPath), 0o600, "without a mode, private");
            await transport.remove(plain.tempPath);
            const whole = await transport.putWhole(
              freshKey(),
              `${base}/modes/key`,
              bytes(5, 3),
              0o4755,
            );
            assert.equal(await mode(whole.tempPath), 0o755);
            await transport.publish(whole.tempPath, `${base}/modes/key`);
            assert.equal(await mode(`${base}/modes/key`), 0o755, "set-id bits are not carried");
            const zero = await assembleAll(transport, freshKey(), 0, `${base}/modes/zero`, 0o644);
            assert.equal(await mode(zero.tempPath), 0o644, "an empty file gets its mode too");
            await transport.remove(zero.tempPath);
          },
        );

        await t.step(
          "publish changes no mode through a link swapped in at the temp name",
          async () => {
            // A user who can write the destination directory renames a link to a private file
            // of the login user over the verified temp file, between its hash and its publish.
            const victim = `${base}/modes/id_ed25519`;
            await Deno.writeTextFile(target.localPath(victim), "private key", { mode: 0o600 });
            const destination = `${base}/modes/shared.bin`;
            const whole = await transport.putWhole(freshKey(), destination, bytes(7, 5), 0o666);
            const local = target.localPath(whole.tempPath);
            await Deno.remove(local);
            await Deno.symlink(target.localPath(victim), local);
            await transport.publish(whole.tempPath, destination).catch(() => {});
            const victimMode = (await Deno.lstat(target.localPath(victim))).mode! & 0o777;
            assert.equal(victimMode, 0o600, "the linked file's mode changed");
            await Deno.remove(target.localPath(destination)).catch(() => {});
            await Deno.remove(local).catch(() => {});
          },
        );

        await t.step("a link planted in TempDir never redirects a write or a removal", async () => {
          const victim = `${base}/victim`;
          await Deno.writeTextFile(target.localPath(victim), "precious");
          const key = freshKey();
          await transport.prepare(key, `${base}/planted.bin`);
          await Deno.symlink(
            target.localPath(victim),
            target.localPath(`${target.tempDir}/${key}/0.part.tmp`),
          );
          await assert.rejects(
            () => transport.putPart(key, 0, bytes(100, 4)),
            (error: unknown) => {
              assert.ok(error instanceof TransportError, String(error));
              assert.match(error.message, /0\.part\.tmp" is a symbolic link/);
              return true;
            },
          );
          assert.equal(await Deno.readTextFile(target.localPath(victim)), "precious");
          // A regular file left there by an earlier try is replaced.
          // (the refused link may have been unlinked: that never touches what it points to)
          await Deno.remove(target.localPath(`${target.tempDir}/${key}/0.part.tmp`)).catch(
            () => {},
          );
          await Deno.writeTextFile(target.localPath(`${target.tempDir}/${key}/0.part.tmp`), "old");
          await transport.putPart(key, 0, bytes(100, 4));
          await transport.removeParts(key);
          // The part directory itself planted as a link to another directory.
          const elsewhere = `${base}/elsewhere`;
          await Deno.mkdir(target.localPath(elsewhere));
          await Deno.writeTextFile(target.localPath(`${elsewhere}/0.part`), "keep");
          await Deno.symlink(
            target.localPath(elsewhere),
            target.localPath(`${target.tempDir}/${key}`),
          );
          await assert.rejects(
            () => transport.prepare(key, `${base}/planted.bin`),
            isUnsafe(/symbolic link/),
          );
          await transport.removeParts(key);
          assert.equal(await Deno.readTextFile(target.localPath(`${elsewhere}/0.part`)), "keep");
          assert.ok(!(await target.list(target.tempDir)).includes(key));
        });

        await t.step(
          "a TempDir others could write or plant in refuses the vessel, in check too",
          async () => {
            const local = target.localPath(target.tempDir);
            const destination = `${base}/refused.bin`;
            const refused = async (pattern: RegExp) => {
              const key = freshKey();
              await assert.rejects(() => transport.prepare(key, destination), isUnsafe(pattern));
              // A part directory made in the same round trip as TempDir's check is gone again.
              assert.ok(!(await target.list(target.tempDir)).includes(key), "part dir left");
              const item = (await transport.probe([base])).find((i) => i.check === "TempDir");
              assert.ok(item && !item.ok, JSON.stringify(item));
              assert.match(item.detail, pattern);
            };
            await transport.prepare(freshKey(), destination).catch(() => {});
            await Deno.chmod(local, 0o777);
            try {
              await refused(/writable by group or others \(mode 0777\).*chmod 700/);
            } finally {
              await Deno.chmod(local, 0o700);
            }
            await Deno.rename(local, `${local}.real`);
            await Deno.symlink(`${local}.real`, local);
            try {
              await refused(/is a symbolic link/);
            } finally {
              await Deno.remove(local);
              await Deno.rename(`${local}.real`, local);
            }
            if (Deno.uid() === 0) {
              await Deno.chown(local, 65534, 65534);
              try {
                await refused(/belongs to uid 65534, not to the login user \(uid 0\)/);
              } finally {
                await Deno.chown(local, 0, 0);
              }
            }
            // A TempDir that is missing is created private again.
            for (const name of await target.list(target.tempDir)) {
              await Deno.remove(`${local}/${name}`, { recursive: true });
            }
            await Deno.remove(local);
            const key = freshKey();
            await transport.prepare(key, destination);
            assert.equal((await Deno.lstat(local)).mode! & 0o777, 0o700);
            await transport.removeParts(key);
          },
        );

        await t.step(
          "a TempDir below a directory others may rename it in refuses the vessel, in check too, " +
            "and leaves nothing there; below a sticky one it is used",
          async () => {
            const shared = `${base}/shared`;
            const local = target.localPath(shared);
            const named = RegExp.escape(JSON.stringify(local));
            const tempDir = `${shared}/cm/tmp`;
            // A new transport each time: the directories above TempDir are judged once per
            // connection, and a refusal only on a connection that has not passed yet.
            const refused = async (pattern: RegExp, tempDirUsed = tempDir) => {
              const other = target.withTempDir(tempDirUsed);
              try {
                await assert.rejects(
                  () => other.prepare(freshKey(), `${base}/refused.bin`),
                  isUnsafe(pattern),
                );
                const item = (await other.probe([base])).find((i) => i.check === "TempDir");
                assert.ok(item && !item.ok, JSON.stringify(item));
                assert.match(item.detail, pattern);
              } finally {
                await other.close();
              }
              assert.deepEqual(await target.list(`${shared}/cm`), [], "made below it");
            };
            await Deno.mkdir(`${local}/cm`, { recursive: true, mode: 0o700 });
            try {
              await Deno.chmod(local, 0o777);
              const writable = new RegExp(
                `${named} above TempDir is writable by group or others without the sticky bit ` +
                  `\\(mode 0777\\).*chmod go-w`,
              );
              await refused(writable);
              // Reached through a link, which its owner may keep: where it leads is judged.
              await Deno.symlink(local, target.localPath(`${base}/link`));
              await refused(writable, `${base}/link/cm/tmp`);
              if (Deno.uid() === 0) {
                await Deno.chmod(local, 0o755);
                await Deno.chown(local, 65534, 65534);
                await refused(
                  new RegExp(`${named} above TempDir belongs to uid 65534, not to root`),
                );
                await Deno.chown(local, 0, 0);
              }
              // Others may not rename in a sticky directory what is not theirs (as in /tmp).
              await Deno.chmod(local, 0o1777);
              for (const used of [tempDir, `${base}/link/cm/tmp`]) {
                const other = target.withTempDir(used);
                try {
                  const key = freshKey();
                  await other.prepare(key, `${base}/sticky.bin`);
                  await other.putPart(key, 0, bytes(10, 7));
                  assert.deepEqual([...await other.listParts(key)], [0]);
                  const item = (await other.probe([base])).find((i) => i.check === "TempDir");
                  assert.ok(item?.ok, JSON.stringify(item));
                  await other.removeParts(key);
                } finally {
                  await other.close();
                }
              }
            } finally {
              await Deno.remove(target.localPath(`${base}/link`)).catch(() => {});
              await Deno.remove(local, { recursive: true });
            }
          },
        );

        await t.step("removeLeftovers removes only its own names older than the age", async () => {
          if (!transport.removeLeftovers) return;
          const local = (path: string) => target.localPath(path);
          const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
          const old = async (path: string) => await Deno.utime(local(path), twoDaysAgo, twoDaysAgo);
          const planted = {
            oldKey: `${target.tempDir}/0123456789ab-7`,
            keptKey: `${target.tempDir}/0123456789ab-8`,
            newKey: `${target.tempDir}/0123456789ab-9`,
            otherDir: `${target.tempDir}/not-a-key`,
            oldTemp: `${base}/left/sub/.contentmonster-0123456789ab-7.tmp`,
            newTemp: `${base}/left/.contentmonster-0123456789ab-9.tmp`,
            oldOther: `${base}/left/.other-file.tmp`,
            // Another shore's, sharing the vessel: two days is not old for those, a month is.
            shoreKey: `${target.tempDir}/fedcba987654-3`,
            shoreTemp: `${base}/left/.contentmonster-fedcba987654-3.tmp`,
            staleShoreKey: `${target.tempDir}/fedcba987654-4`,
            staleShoreTemp: `${base}/left/sub/.contentmonster-fedcba987654-4.tmp`,
          };
          const dirs = [planted.oldKey, planted.keptKey, planted.newKey, planted.otherDir];
          for (const dir of [...dirs, planted.shoreKey, planted.staleShoreKey]) {
            await Deno.mkdir(local(dir), { recursive: true, mode: 0o700 });
            await Deno.writeFile(local(`${dir}/0.part`), bytes(10, 1));
          }
          await Deno.mkdir(local(`${base}/left/sub`), { recursive: true });
          const files = [planted.oldTemp, planted.newTemp, planted.oldOther];
          for (const file of [...files, planted.shoreTemp, planted.staleShoreTemp]) {
            await Deno.writeFile(local(file), bytes(10, 2));
          }
          for (const path of [planted.oldKey, planted.keptKey, planted.otherDir]) await old(path);
          for (const path of [planted.oldTemp, planted.oldOther]) await old(path);
          for (const path of [planted.shoreKey, planted.shoreTemp]) await old(path);
          const monthAgo = new Date(Date.now() - 31 * 86_400_000);
          for (const path of [planted.staleShoreKey, planted.staleShoreTemp]) {
            await Deno.utime(local(path), monthAgo, monthAgo);
          }
          const removed = await transport.removeLeftovers({
            olderThanMs: 86_400_000,
            keep: new Set(["0123456789ab-8"]),
            destinations: [base],
            others: { instanceId: "0123456789ab", olderThanMs: 30 * 86_400_000 },
          });
          assert.equal(removed, 4);
          const exists = (path: string) => Deno.lstat(local(path)).then(() => true, () => false);
          for (const gone of [planted.oldKey, planted.oldTemp]) {
            assert.equal(await exists(gone), false, gone);
          }
          for (const gone of [planted.staleShoreKey, planted.staleShoreTemp]) {
            assert.equal(await exists(gone), false, gone);
          }
          for (const kept of [planted.keptKey, planted.newKey, planted.otherDir, planted.newTemp]) {
            assert.equal(await exists(kept), true, kept);
          }
          for (const kept of [planted.oldOther, planted.shoreKey, planted.shoreTemp]) {
            assert.equal(await exists(kept), true, kept);
          }
          for (const dir of [planted.keptKey, planted.newKey, planted.otherDir, planted.shoreKey]) {
            await Deno.remove(local(dir), { recursive: true });
          }
          await Deno.remove(local(`${base}/left`), { recursive: true });
        });

        await t.step(
          "removeLeftovers on an unsafe TempDir removes nothing; a missing one is not made",
          async () => {
            if (!transport.removeLeftovers) return;
            const local = (path: string) => target.localPath(path);
            const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
            const exists = (path: string) => Deno.lstat(local(path)).then(() => true, () => false);
            const temp = `${base}/unsafe-left/.contentmonster-0123456789ab-7.tmp`;
            await Deno.mkdir(local(`${base}/unsafe-left`));
            await Deno.writeFile(local(temp), bytes(10, 2));
            await Deno.utime(local(temp), twoDaysAgo, twoDaysAgo);
            const withOld = {
              olderThanMs: 86_400_000,
              keep: new Set<string>(),
              destinations: [`${base}/unsafe-left`],
            };
            /** An old part directory in `dir` (a vessel path), which `tempDir` must keep. */
            const refused = async (tempDir: string, dir: string, pattern: RegExp) => {
              const key = `${dir}/0123456789ab-7`;
              await Deno.mkdir(local(key), { recursive: true, mode: 0o700 });
              await Deno.writeFile(local(`${key}/0.part`), bytes(10, 1));
              await Deno.utime(local(key), twoDaysAgo, twoDaysAgo);
              const other = target.withTempDir(tempDir);
              try {
                await assert.rejects(() => other.removeLeftovers!(withOld), isUnsafe(pattern));
              } finally {
                await other.close();
              }
              assert.equal(await exists(`${key}/0.part`), true, "removed through it");
              assert.equal(await exists(temp), true, "removed below a destination");
            };
            const real = `${base}/real-tmp`;
            await Deno.symlink(local(real), local(`${base}/linked-tmp`));
            await refused(`${base}/linked-tmp`, real, /is a symbolic link/);
            const shared = `${base}/open-above`;
            await Deno.mkdir(local(`${shared}/tmp`), { recursive: true, mode: 0o700 });
            await Deno.chmod(local(shared), 0o777);
            await refused(
              `${shared}/tmp`,
              `${shared}/tmp`,
              /above TempDir is writable by group or others without the sticky bit/,
            );
            const missing = target.withTempDir(`${base}/no-temp/tmp`);
            try {
              assert.equal(await missing.removeLeftovers!(withOld), 1);
            } finally {
              await missing.close();
            }
            assert.equal(await exists(temp), false);
            assert.equal(await exists(`${base}/no-temp`), false, "TempDir or above made");
            for (const dir of ["linked-tmp", "real-tmp", "open-above", "unsafe-left"]) {
              await Deno.remove(local(`${base}/${dir}`), { recursive: true });
            }
          },
        );

        await t.step("free space and probe report the vessel", async () => {
          const space = await transport.freeSpace(`${base}/x`);
          if (space !== undefined) assert.ok(space.freeBytes > 0);
          const items = await transport.probe([base]);
          assert.ok(items.length > 0);
          for (const item of items) assert.ok(item.ok, `${item.check}: ${item.detail}`);
        });

        await t.step("nothing is left in TempDir", async () => {
          const left = (await target.list(target.tempDir)).filter((n) => n.startsWith("conf-"));
          assert.deepEqual(left, []);
        });
      } finally {
        await transport.close();
        await transport.close();
        await target.cleanup();
      }
    },
  });
}
