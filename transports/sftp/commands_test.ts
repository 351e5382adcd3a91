import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  assembleCommand,
  batchHashCommand,
  EMPTY_SHA256,
  EXIT_PART_MISSING,
  EXIT_STOPPED,
  hashCommand,
  parseBatchHashes,
  parseResidentHasherLine,
  parseSha256,
  prefixCopyCommand,
  PROBE_COMMAND,
  RESIDENT_HASHER_COMMAND,
  residentFlushRequest,
  residentHashRequest,
  streamAssemblyCommand,
} from "./commands.ts";
import { decoded, runShell as sh, type ShellResult } from "../../tests/cli_harness.ts";

const HOSTILE_DIR = "dir with 'quotes' $HOME `id` \n newline -x Ünï";
const HOSTILE_FILE = '-leading dash; $(touch pwned) "q" 日本.bin';

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function withParts(
  parts: Uint8Array[],
  body: (partDir: string, tempPath: string, root: string) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir();
  try {
    const partDir = `${root}/${HOSTILE_DIR}/parts`;
    const destDir = `${root}/${HOSTILE_DIR}/dest`;
    await Deno.mkdir(partDir, { recursive: true });
    await Deno.mkdir(destDir, { recursive: true });
    for (const [index, data] of parts.entries()) {
      await Deno.writeFile(`${partDir}/${index}.part`, data);
    }
    await body(partDir, `${destDir}/${HOSTILE_FILE}`, root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("assembleCommand() concatenates parts in order and prints their sha256", async () => {
  const parts = [
    new TextEncoder().encode("first\n"),
    new Uint8Array(0),
    new Uint8Array(70_000).map((_, index) => (index * 7919) % 251),
  ];
  await withParts(parts, async (partDir, tempPath, root) => {
    const run = await sh(assembleCommand(partDir, parts.length, tempPath, true));
    assert.equal(run.code, 0, run.stderr);
    const whole = new Uint8Array(await Deno.readFile(tempPath));
    assert.deepEqual(whole, new Uint8Array([...parts[0], ...parts[2]]));
    assert.equal(parseSha256(run.stdout), sha256(whole));
    const names = [...Deno.readDirSync(root)].map((entry) => entry.name);
    assert.deepEqual(names, [HOSTILE_DIR], "no file was created by a hostile name");
  });
});

Deno.test("assembleCommand() with zero parts makes an empty file", async () => {
  await withParts([], async (partDir, tempPath) => {
    await Deno.remove(partDir);
    const run = await sh(assembleCommand(partDir, 0, tempPath, false));
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await Deno.stat(tempPath)).size, 0);
    assert.equal(parseSha256(run.stdout), EMPTY_SHA256);
  });
});

Deno.test("assembleCommand() exits 66 on a missing part and leaves no temp file", async () => {
  await withParts([new Uint8Array([1]), new Uint8Array([2])], async (partDir, tempPath) => {
    await Deno.writeTextFile(tempPath, "stale temp from an earlier try");
    await Deno.remove(`${partDir}/1.part`);
    await Deno.writeTextFile(`${partDir}/1.part.tmp`, "a half-written part never counts");
    const run = await sh(assembleCommand(partDir, 2, tempPath, true));
    assert.equal(run.code, EXIT_PART_MISSING);
    await assert.rejects(Deno.stat(tempPath), Deno.errors.NotFound);
  });
});

Deno.test("assembleCommand() fails with cat's status and removes the temp file when the disk is full", async () => {
  await withParts([new Uint8Array(256 * 1024)], async (partDir, tempPath) => {
    const destDir = tempPath.slice(0, tempPath.lastIndexOf("/"));
    // A 64 KiB tmpfs over the destination directory, in a private mount namespace.
    const inner = [
      `mount -t tmpfs -o size=64k tmpfs "$1"`,
      `sh -c "$2"`,
      `s=$?; ls -A "$1"; exit $s`,
    ].join("; ");
    const output = await new Deno.Command("unshare", {
      args: [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
        "sh",
        destDir,
        assembleCommand(partDir, 1, tempPath, true),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 1, stderr);
    assert.match(stderr, /No space left on device/);
    assert.equal(new TextDecoder().decode(output.stdout), "", "the temp file was removed");
  });
});

Deno.test("hashCommand() uses sha256sum when the vessel has no openssl", async () => {
  const bin = await Deno.makeTempDir();
  try {
    for (const tool of ["sha256sum", "cat"]) {
      const path = (await sh(`command -v ${tool}`)).stdout.trim();
      await Deno.symlink(path, `${bin}/${tool}`);
    }
    const data = crypto.getRandomValues(new Uint8Array(5000));
    await Deno.writeFile(`${bin}/-data file`, data);
    const withoutOpenssl = await sh(hashCommand(`${bin}/-data file`), { PATH: bin });
    assert.equal(withoutOpenssl.code, 0, withoutOpenssl.stderr);
    assert.equal(parseSha256(withoutOpenssl.stdout), sha256(data));
    const withOpenssl = await sh(hashCommand(`${bin}/-data file`));
    assert.equal(parseSha256(withOpenssl.stdout), sha256(data));
    const missing = await sh(hashCommand(`${bin}/absent`));
    assert.notEqual(missing.code, 0);
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("batchHashCommand() hashes files of several hostile directories with one hasher each", async () => {
  const root = await Deno.makeTempDir();
  const bin = await Deno.makeTempDir();
  try {
    const dirs = [`${root}/${HOSTILE_DIR}`, `${root}/second -dir`];
    const files = new Map<string, Uint8Array>();
    for (const [index, dir] of dirs.entries()) {
      await Deno.mkdir(dir, { recursive: true });
      // The same name in both directories: each line must count for its own directory.
      for (const name of [".contentmonster-0123456789ab-1.tmp", `.contentmonster-x-${index}.tmp`]) {
        const data = crypto.getRandomValues(new Uint8Array(3000 + index * 7 + name.length));
        await Deno.writeFile(`${dir}/${name}`, data);
        files.set(`${index}/${name}`, data);
      }
    }
    const groups = dirs.map((dir, index) => ({
      dir,
      names: [
        ".contentmonster-0123456789ab-1.tmp",
        `.contentmonster-x-${index}.tmp`,
        ".absent.tmp",
      ],
    }));
    for (const tool of ["sha256sum", "cat"]) {
      await Deno.symlink((await sh(`command -v ${tool}`)).stdout.trim(), `${bin}/${tool}`);
    }
    for (const env of [undefined, { PATH: bin }]) {
      const run = await sh(batchHashCommand(groups), env);
      const hashes = parseBatchHashes(run.stdout);
      assert.equal(hashes.size, files.size, `${JSON.stringify(env)}: ${run.stdout}${run.stderr}`);
      for (const [key, data] of files) assert.equal(hashes.get(key), sha256(data), key);
    }
    assert.throws(() => batchHashCommand([{ dir: root, names: ["-rf"] }]), /not one of our temp/);
    assert.throws(() => batchHashCommand([{ dir: root, names: [".a b"] }]), /not one of our temp/);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("prefixCopyCommand() copies the first blocks of a file with a hostile name into a new private file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/${HOSTILE_FILE}`;
    const copy = `${path}.kept.tmp`;
    const data = crypto.getRandomValues(new Uint8Array(10_000));
    await Deno.writeFile(path, data);
    // A link planted at the copy's name goes; what it points to is not written.
    const target = `${dir}/target`;
    await Deno.writeTextFile(target, "untouched");
    await Deno.symlink(target, copy);
    const three = await sh(prefixCopyCommand(path, copy, 3, 1024));
    assert.equal(parseSha256(three.stdout), sha256(data.subarray(0, 3072)), three.stderr);
    assert.equal(sha256(await Deno.readFile(copy)), sha256(data.subarray(0, 3072)));
    assert.equal((await Deno.lstat(copy)).mode! & 0o7777, 0o600);
    assert.equal(await Deno.readTextFile(target), "untouched");
    const all = await sh(prefixCopyCommand(path, copy, 20, 1024)); // past the end: the whole file
    assert.equal(parseSha256(all.stdout), sha256(data));
    const missing = await sh(prefixCopyCommand(`${dir}/missing`, copy, 3, 1024));
    assert.notEqual(missing.code, 0);
    assert.equal(await Deno.lstat(copy).catch(() => undefined), undefined, "copy left behind");
    assert.throws(() => prefixCopyCommand(path, copy, -1, 1024), RangeError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PROBE_COMMAND reports cat, the hasher and the empty hash", async () => {
  const run = await sh(PROBE_COMMAND);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /^cat ok$/m);
  assert.match(run.stdout, /^hasher (openssl|sha256sum)$/m);
  assert.equal(parseSha256(run.stdout), EMPTY_SHA256);
});

Deno.test("parseSha256() reads openssl and sha256sum output, escaped names included", () => {
  const hex = "a".repeat(64);
  assert.equal(parseSha256(`${hex} *stdin\n`), hex);
  assert.equal(parseSha256(`${hex}  -\n`), hex);
  assert.equal(parseSha256(`\\${hex}  file\\nname\n`), hex);
  assert.equal(parseSha256(`cat ok\n${hex} *stdin\n`), hex);
  assert.equal(parseSha256("a".repeat(65)), undefined);
  assert.equal(parseSha256(""), undefined);
});

Deno.test("vessel commands refuse relative paths", () => {
  assert.throws(() => hashCommand("relative/path"), TypeError);
  assert.throws(() => assembleCommand("/parts", 1, "-rf", true), TypeError);
  assert.throws(() => streamAssemblyCommand("parts", 1, "/tmp/x", true), TypeError);
  assert.throws(() => streamAssemblyCommand("/parts", 1.5, "/tmp/x", true), RangeError);
});

/** Runs `command` with `shell`, writing `input` to its stdin. */
async function shWithInput(
  command: string,
  input: string,
  shell = "/bin/sh",
  env?: Record<string, string>,
): Promise<ShellResult> {
  const child = new Deno.Command(shell, {
    args: ["-c", command],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  try {
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  } catch (error) {
    // A command that stops early (a missing part) may exit before it reads its input.
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
  }
  const output = await child.output();
  return decoded(output);
}

for (const shell of ["/bin/sh", "/bin/bash"]) {
  Deno.test(`RESIDENT_HASHER_COMMAND under ${shell} answers requests in order, evaluating nothing it reads`, async () => {
    const root = await Deno.makeTempDir();
    try {
      // Leading and trailing blanks too: a plain \`read\` would strip them.
      const dirs = [`${root}/ lead 'q' $HOME \`id\` -x Ünï `, `${root}/second`];
      const name = ".contentmonster-0123456789ab-1.tmp";
      const files = new Map<string, Uint8Array>();
      for (const [index, dir] of dirs.entries()) {
        await Deno.mkdir(dir);
        for (const file of [name, `.x-${index}.tmp`]) {
          const data = crypto.getRandomValues(new Uint8Array(2000 + index * 13 + file.length));
          await Deno.writeFile(`${dir}/${file}`, data);
          files.set(`${index}/${file}`, data);
        }
      }
      const input = dirs.map((dir, index) =>
        residentHashRequest(index, { dir, names: [name, `.x-${index}.tmp`, ".absent.tmp"] })
      ).join("") +
        // A tag that is not a number stops it: the request after it is never answered.
        "7 ; touch x\n/\n.a.tmp\n.\n" +
        residentHashRequest(9, { dir: dirs[1], names: [name] });
      const run = await shWithInput(RESIDENT_HASHER_COMMAND, input, shell);
      assert.equal(run.code, EXIT_STOPPED, run.stderr);
      const lines = run.stdout.trimEnd().split("\n").map(parseResidentHasherLine);
      const expected = [0, 1].flatMap((index) => [
        { kind: "start", tag: index },
        ...[name, `.x-${index}.tmp`].map((file) => ({
          kind: "hash",
          name: file,
          sha256: sha256(files.get(`${index}/${file}`)!),
        })),
        { kind: "end", tag: index },
      ]);
      assert.deepEqual(lines, expected, run.stdout);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
}

Deno.test("residentHashRequest() refuses names that are not ours and leaves line breaks to a command", () => {
  assert.equal(residentHashRequest(3, { dir: "/a b", names: [".c.tmp"] }), "3\n/a b\n.c.tmp\n.\n");
  assert.equal(residentHashRequest(0, { dir: `/${HOSTILE_DIR}`, names: [".c.tmp"] }), undefined);
  assert.throws(() => residentHashRequest(0, { dir: "/a", names: ["-rf"] }), /not one of our temp/);
  assert.throws(() => residentHashRequest(0, { dir: "/a", names: [".a\n.b"] }), /not one/);
  assert.throws(() => residentHashRequest(0, { dir: "a", names: [".c.tmp"] }), /not absolute/);
});

const STREAM_PARTS = [
  new TextEncoder().encode("first\n"),
  new Uint8Array(0),
  new Uint8Array(70_000).map((_, index) => (index * 7919) % 251),
];

for (const shell of ["/bin/sh", "/bin/bash"]) {
  Deno.test(`streamAssemblyCommand() under ${shell} appends parts as their indices arrive`, async () => {
    await withParts(STREAM_PARTS, async (partDir, tempPath, root) => {
      const command = streamAssemblyCommand(partDir, 3, tempPath, true);
      const run = await shWithInput(command, "0\n1\n2\n", shell);
      assert.equal(run.code, 0, run.stderr);
      const whole = new Uint8Array([...STREAM_PARTS[0], ...STREAM_PARTS[2]]);
      assert.deepEqual(new Uint8Array(await Deno.readFile(tempPath)), whole);
      assert.equal(parseSha256(run.stdout), sha256(whole));
      assert.match(run.stdout, /^ok 1 6\nok 2 6\nok 3 70006\n/);
      assert.match(run.stdout, /^parts 3 70006 end$/m);
      assert.match(run.stdout, /^size 70006$/m);
      const names = [...Deno.readDirSync(root)].map((entry) => entry.name);
      assert.deepEqual(names, [HOSTILE_DIR], "no file was created by a hostile name");
    });
  });

  Deno.test(`streamAssemblyCommand() under ${shell} flushes each batch as it is appended`, async () => {
    await withParts(STREAM_PARTS, async (partDir, tempPath, root) => {
      // A `sync` first on PATH that notes each call, then flushes as the real one.
      const bin = `${root}/bin`;
      await Deno.mkdir(bin);
      await Deno.writeTextFile(
        `${bin}/sync`,
        `#!/bin/sh\necho "$*" >> ${root}/syncs\nexec /bin/sync "$@"\n`,
      );
      await Deno.chmod(`${bin}/sync`, 0o755);
      const path = `${bin}:${Deno.env.get("PATH")}`;
      const run = await shWithInput(
        streamAssemblyCommand(partDir, 3, tempPath, true),
        "0\n1\n2\n",
        shell,
        { PATH: path },
      );
      assert.equal(run.code, 0, run.stderr);
      const syncs = await Deno.readTextFile(`${root}/syncs`);
      // One per batch while the parts come, and one after the last (the mode, the size).
      assert.equal(syncs, `-- ${tempPath}\n`.repeat(4));
      assert.equal(
        parseSha256(run.stdout),
        sha256(new Uint8Array([...STREAM_PARTS[0], ...STREAM_PARTS[2]])),
      );
    });
  });

  Deno.test(`streamAssemblyCommand() under ${shell} appends a batch of parts with one line`, async () => {
    await withParts(STREAM_PARTS, async (partDir, tempPath) => {
      // Part 0 came late: parts 0 to 2 are whole at once.
      const run = await shWithInput(
        streamAssemblyCommand(partDir, 3, tempPath, false),
        "2\n",
        shell,
      );
      assert.equal(run.code, 0, run.stderr);
      const whole = new Uint8Array([...STREAM_PARTS[0], ...STREAM_PARTS[2]]);
      assert.deepEqual(new Uint8Array(await Deno.readFile(tempPath)), whole);
      assert.equal(parseSha256(run.stdout), sha256(whole));
      assert.match(run.stdout, /^ok 3 70006\nparts 3 70006 end$/m);
    });
  });

  Deno.test(`streamAssemblyCommand() under ${shell} stops without a temp file when input ends early or is wrong`, async () => {
    await withParts(STREAM_PARTS, async (partDir, tempPath) => {
      const command = streamAssemblyCommand(partDir, 3, tempPath, false);
      const inputs = ["", "0\n1\n", "1\n0\n", "3\n", "-1\n", "0\n$(touch pwned)\n", "x\n"];
      for (const input of inputs) {
        await Deno.writeTextFile(tempPath, "stale temp from an earlier try");
        const run = await shWithInput(command, input, shell);
        assert.equal(run.code, EXIT_STOPPED, `${JSON.stringify(input)}: ${run.stderr}`);
        assert.match(run.stdout, /^stopped$/m);
        await assert.rejects(Deno.stat(tempPath), Deno.errors.NotFound);
      }
    });
  });

  Deno.test(`streamAssemblyCommand() under ${shell} exits 66 naming a missing part, without a temp file`, async () => {
    await withParts(STREAM_PARTS, async (partDir, tempPath) => {
      await Deno.remove(`${partDir}/1.part`);
      const run = await shWithInput(
        streamAssemblyCommand(partDir, 3, tempPath, true),
        "0\n1\n2\n",
        shell,
      );
      assert.equal(run.code, EXIT_PART_MISSING, run.stderr);
      assert.match(run.stdout, /^missing 1$/m);
      await assert.rejects(Deno.stat(tempPath), Deno.errors.NotFound);
      const gone = await shWithInput(
        streamAssemblyCommand(`${partDir}/absent`, 1, tempPath, true),
        "0\n",
        shell,
      );
      assert.equal(gone.code, EXIT_PART_MISSING, gone.stderr);
    });
  });
}

Deno.test("streamAssemblyCommand() with zero parts makes an empty file without reading stdin", async () => {
  await withParts([], async (partDir, tempPath) => {
    await Deno.remove(partDir);
    const run = await shWithInput(streamAssemblyCommand(partDir, 0, tempPath, false), "");
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await Deno.stat(tempPath)).size, 0);
    assert.equal(parseSha256(run.stdout), EMPTY_SHA256);
  });
});

Deno.test("streamAssemblyCommand() fails and removes the temp file when the disk fills", async () => {
  await withParts(
    [new Uint8Array(48 * 1024), new Uint8Array(48 * 1024)],
    async (partDir, tempPath) => {
      const destDir = tempPath.slice(0, tempPath.lastIndexOf("/"));
      // A 64 KiB tmpfs over the destination directory, in a private mount namespace:
      // The failed write of cat stops the assembly; the size check would see it too.
      const inner = [
        `mount -t tmpfs -o size=64k tmpfs "$1"`,
        `printf '0\\n1\\n' | sh -c "$2"`,
        `s=$?; ls -A "$1"; exit $s`,
      ].join("; ");
      const output = await new Deno.Command("unshare", {
        args: [
          "-m",
          "--propagation",
          "private",
          "sh",
          "-c",
          inner,
          "sh",
          destDir,
          streamAssemblyCommand(partDir, 2, tempPath, true),
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      const stdout = new TextDecoder().decode(output.stdout);
      assert.equal(output.code, 1, stderr);
      assert.match(stderr, /No space left on device/);
      assert.doesNotMatch(stdout, /^size /m);
      assert.doesNotMatch(stdout, /contentmonster|\.bin/, "the temp file was removed");
    },
  );
});

Deno.test("assembleCommand() assembles 10,000 parts: its length does not grow with the count", async () => {
  const parts = Array.from({ length: 10_000 }, (_, i) => new TextEncoder().encode(`${i},`));
  await withParts(parts, async (partDir, tempPath) => {
    const command = assembleCommand(partDir, parts.length, tempPath, false);
    assert.ok(command.length < assembleCommand(partDir, 3, tempPath, false).length + 20);
    const run = await sh(command);
    assert.equal(run.code, 0, run.stderr.slice(0, 500));
    const whole = new Uint8Array(await Deno.readFile(tempPath));
    assert.equal(new TextDecoder().decode(whole), parts.map((_, i) => `${i},`).join(""));
    assert.equal(parseSha256(run.stdout), sha256(whole));
  });
});

Deno.test("assembly commands create the temp file 0600 whatever the umask", async () => {
  await withParts([new TextEncoder().encode("secret\n")], async (partDir, tempPath) => {
    for (const command of [assembleCommand(partDir, 1, tempPath, false)]) {
      const run = await sh(`umask 000; ${command}`);
      assert.equal(run.code, 0, run.stderr);
      assert.equal((await Deno.stat(tempPath)).mode! & 0o777, 0o600);
      await Deno.remove(tempPath);
    }
    const run = await shWithInput(
      `umask 000; ${streamAssemblyCommand(partDir, 1, tempPath, false)}`,
      "0\n",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await Deno.stat(tempPath)).mode! & 0o777, 0o600);
  });
});

Deno.test("assembly commands write nothing through a link planted at the temp name after its removal", async () => {
  const secret = "secret part\n";
  await withParts([new TextEncoder().encode(secret)], async (partDir, tempPath, root) => {
    const fifo = `${root}/fifo`;
    assert.equal((await new Deno.Command("mkfifo", { args: [fifo] }).output()).code, 0);
    // A user who can write the destination directory wins the race: right after `rm -f`
    // removed the temp name, a link to that user's FIFO is there.
    const bin = `${root}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(
      `${bin}/rm`,
      '#!/bin/sh\n/bin/rm "$@" || exit\n[ -e "$CM_PLANTED" ] && exit 0\n' +
        ': > "$CM_PLANTED" && exec ln -s -- "$CM_FIFO" "$CM_TEMP"\n',
      { mode: 0o755 },
    );
    const runs: [string, string][] = [
      ["assembleCommand", assembleCommand(partDir, 1, tempPath, false)],
      ["streamAssemblyCommand", streamAssemblyCommand(partDir, 1, tempPath, false)],
    ];
    for (const [name, command] of runs) {
      const planted = `${root}/planted-${name}`;
      // The attacker reads the FIFO, so that opening it for writing does not block.
      const reader = new Deno.Command("cat", { args: [fifo], stdout: "piped" }).spawn();
      // Bounded: a command that wrote into the FIFO then waits on it to hash what it wrote.
      const child = new Deno.Command("/bin/sh", {
        args: ["-c", command],
        env: {
          PATH: `${bin}:${Deno.env.get("PATH")}`,
          CM_PLANTED: planted,
          CM_FIFO: fifo,
          CM_TEMP: tempPath,
        },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(5_000),
      }).spawn();
      const input = child.stdin.getWriter();
      await input.write(new TextEncoder().encode("0\n")).catch(() => {});
      await input.close().catch(() => {});
      const result = decoded(await child.output());
      const stolen = await Promise.race([
        reader.output().then((output) => new TextDecoder().decode(output.stdout)),
        new Promise<string>((resolve) =>
          setTimeout(() => resolve("(reader still blocked)"), 3_000)
        ),
      ]);
      if (stolen === "(reader still blocked)") reader.kill();
      assert.ok((await Deno.lstat(planted)).isFile, `${name}: the link was planted`);
      assert.notEqual(result.code, 0, `${name} went on through the link`);
      assert.match(result.stderr, /not a regular file/, name);
      assert.equal(stolen, "", `${name} wrote the file's bytes through the link`);
      await Deno.remove(tempPath).catch(() => {});
    }
  });
});

Deno.test("assembly commands give the file its mode once written, through its descriptor", async () => {
  await withParts([new TextEncoder().encode("shared\n")], async (partDir, tempPath) => {
    for (const count of [0, 1]) {
      const run = await sh(`umask 000; ${assembleCommand(partDir, count, tempPath, false, 0o640)}`);
      assert.equal(run.code, 0, run.stderr);
      assert.equal((await Deno.stat(tempPath)).mode! & 0o777, 0o640, `${count} parts`);
      await Deno.remove(tempPath);
    }
    const run = await shWithInput(
      streamAssemblyCommand(partDir, 1, tempPath, false, 0o4755),
      "0\n",
    );
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await Deno.stat(tempPath)).mode! & 0o7777, 0o755, "set-id bits are not carried");
  });
});

Deno.test("streamAssemblyCommand() hashes the bytes it wrote to the temp file, not a second read of the part", async () => {
  await withParts([], async (partDir, tempPath) => {
    // A part that gives other bytes (same length) each time it is opened.
    const fifo = `${partDir}/0.part`;
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    const writer = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        `for i in 1 2 3 4; do printf 'version %s\\n' $i > "$1"; sleep 0.3; done`,
        "sh",
        fifo,
      ],
    }).spawn();
    try {
      const run = await shWithInput(streamAssemblyCommand(partDir, 1, tempPath, false), "0\n");
      assert.equal(run.code, 0, run.stderr);
      const temp = new Uint8Array(await Deno.readFile(tempPath));
      assert.equal(parseSha256(run.stdout), sha256(temp), new TextDecoder().decode(temp));
    } finally {
      writer.kill("SIGKILL");
      await writer.status;
    }
  });
});

for (const shell of ["/bin/sh", "/bin/bash"]) {
  Deno.test(`RESIDENT_HASHER_COMMAND under ${shell} flushes a directory's file system when asked, and says so only if sync -f succeeded`, async () => {
    const root = await Deno.makeTempDir();
    try {
      // A `sync` first on PATH that notes its arguments, and fails for the directory "bad".
      const bin = `${root}/bin`;
      await Deno.mkdir(bin);
      await Deno.writeTextFile(
        `${bin}/sync`,
        `#!/bin/sh\nprintf '%s|' "$@" >> ${root}/synced; echo >> ${root}/synced\n` +
          `case "$3" in */bad) exit 1 ;; esac\nexec /bin/sync "$@"\n`,
        { mode: 0o755 },
      );
      const hostile = `${root}/ lead 'q' $HOME \`id\` -x Ünï `;
      const bad = `${root}/bad`;
      for (const dir of [hostile, bad]) await Deno.mkdir(dir);
      const name = ".contentmonster-0123456789ab-1.tmp";
      await Deno.writeTextFile(`${hostile}/${name}`, "x");
      const input = residentFlushRequest(3, hostile)! + residentFlushRequest(4, bad)! +
        residentHashRequest(5, { dir: hostile, names: [name] });
      const run = await shWithInput(RESIDENT_HASHER_COMMAND, input, shell, {
        PATH: `${bin}:/usr/bin:/bin`,
      });
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.stdout.trimEnd().split("\n").map(parseResidentHasherLine), [
        { kind: "start", tag: 3 },
        { kind: "flushed", tag: 3 },
        { kind: "end", tag: 3 },
        { kind: "start", tag: 4 },
        { kind: "end", tag: 4 },
        { kind: "start", tag: 5 },
        { kind: "hash", name, sha256: sha256(new TextEncoder().encode("x")) },
        { kind: "end", tag: 5 },
      ]);
      // Each directory reached sync as one word, after `--`; a hash request flushes nothing.
      assert.equal(
        await Deno.readTextFile(`${root}/synced`),
        `-f|--|${hostile}|\n-f|--|${bad}|\n`,
      );
      // Before Linux 5.8 syncfs(2) reports no failed write: no flush is claimed there.
      for (const [system, release] of [["Linux", "5.4.0-150-generic"], ["FreeBSD", "14.1"]]) {
        await Deno.writeTextFile(
          `${bin}/uname`,
          `#!/bin/sh\nif [ "$1" = -s ]; then echo ${system}; else echo ${release}; fi\n`,
          { mode: 0o755 },
        );
        const old = await shWithInput(
          RESIDENT_HASHER_COMMAND,
          residentFlushRequest(6, hostile)!,
          shell,
          {
            PATH: `${bin}:/usr/bin:/bin`,
          },
        );
        assert.equal(old.stdout, "@ 6\n= 6\n", `${system} ${release}`);
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
}

Deno.test("residentFlushRequest() leaves a directory with a line break to another way", () => {
  assert.equal(residentFlushRequest(2, "/a b"), "2 s\n/a b\n.\n");
  assert.equal(residentFlushRequest(0, `/${HOSTILE_DIR}`), undefined);
  assert.throws(() => residentFlushRequest(0, "relative"), TypeError);
});
