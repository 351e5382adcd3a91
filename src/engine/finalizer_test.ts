import assert from "node:assert/strict";
import { Store } from "../store/store.ts";
import { finalizeFile, numberedName } from "./finalizer.ts";
import { toSourceStat, UnsafeSourceError } from "./source.ts";
import { whileSwapped } from "../../tests/helpers.ts";

/** Files queued in the store, finalized later: what the engine does between the two. */
interface Queue {
  /** Queues the file at `relpath` as it is now; returns its id. */
  add(relpath: string): Promise<number>;
  /** Finalizes the queued file `fileId`. */
  finalize(fileId: number): Promise<string>;
  /** Whether the store still has the file `fileId`. */
  has(fileId: number): boolean;
}

async function withLocation(
  body: (
    dir: string,
    location: string,
    finalize: (relpath: string) => Promise<string>,
    queue: Queue,
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-finalize-" });
  const store = await Store.open(`${dir}/state.db`);
  const location = `${dir}/out`;
  await Deno.mkdir(location);
  const directory = { name: "out", location, destination: "/srv/in" };
  const queue: Queue = {
    async add(relpath) {
      const stat = toSourceStat(await Deno.lstat(`${location}/${relpath}`));
      return store.enqueue("out", relpath, stat.size, stat.mtimeMs, [], stat).fileId;
    },
    finalize: (fileId) => finalizeFile(store, directory, store.file(fileId)!),
    has: (fileId) => store.file(fileId) !== undefined,
  };
  const finalize = async (relpath: string) => await queue.finalize(await queue.add(relpath));
  try {
    await body(dir, location, finalize, queue);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("finalizeFile() never replaces a file in processed/: the newcomer gets a numbered name", async () => {
  await withLocation(async (_, location, finalize) => {
    for (const version of ["first", "second", "third"]) {
      await Deno.mkdir(`${location}/sub`, { recursive: true });
      await Deno.writeTextFile(`${location}/sub/report.csv`, version);
      assert.equal(await finalize("sub/report.csv"), "processed");
    }
    const processed = `${location}/processed/sub`;
    assert.equal(await Deno.readTextFile(`${processed}/report.csv`), "first");
    assert.equal(await Deno.readTextFile(`${processed}/report.1.csv`), "second");
    assert.equal(await Deno.readTextFile(`${processed}/report.2.csv`), "third");
    await assert.rejects(() => Deno.lstat(`${location}/sub/report.csv`), Deno.errors.NotFound);
  });
});

Deno.test("finalizeFile() completes a move that died between link and unlink", async () => {
  await withLocation(async (_, location, finalize) => {
    await Deno.writeTextFile(`${location}/f.txt`, "once");
    await Deno.mkdir(`${location}/processed`);
    await Deno.link(`${location}/f.txt`, `${location}/processed/f.txt`);
    assert.equal(await finalize("f.txt"), "processed");
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(`${location}/processed`))).map((e) => e.name),
      ["f.txt"],
    );
    await assert.rejects(() => Deno.lstat(`${location}/f.txt`), Deno.errors.NotFound);
  });
});

Deno.test("finalizeFile() finishes a move whose link changed the queued file's ctime, sending nothing again", async () => {
  await withLocation(async (_, location, __, queue) => {
    await Deno.writeTextFile(`${location}/report.csv`, "sent");
    const fileId = await queue.add("report.csv");
    await Deno.mkdir(`${location}/processed`);
    await Deno.writeTextFile(`${location}/processed/report.csv`, "kept");
    // Deno's ctime has whole seconds: the link of the killed run lands in the next one.
    await new Promise((resolve) => setTimeout(resolve, 1_000 - Date.now() % 1_000 + 50));
    await Deno.link(`${location}/report.csv`, `${location}/processed/report.1.csv`);
    assert.equal(await queue.finalize(fileId), "processed");
    assert.equal(queue.has(fileId), false, "forgotten, not queued again");
    const names = await Array.fromAsync(Deno.readDir(`${location}/processed`));
    assert.deepEqual(names.map((entry) => entry.name).sort(), ["report.1.csv", "report.csv"]);
    await assert.rejects(() => Deno.lstat(`${location}/report.csv`), Deno.errors.NotFound);
  });
});

Deno.test("finalizeFile() moves nothing through a symlinked processed/ or subdirectory", async () => {
  await withLocation(async (dir, location, finalize) => {
    await Deno.mkdir(`${dir}/victim`);
    await Deno.writeTextFile(`${location}/authorized_keys`, "ssh-ed25519 AAAA attacker");
    await Deno.symlink(`${dir}/victim`, `${location}/processed`);
    await assert.rejects(() => finalize("authorized_keys"), UnsafeSourceError);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/victim`)), []);
    assert.ok((await Deno.lstat(`${location}/authorized_keys`)).isFile);
    await Deno.remove(`${location}/processed`);

    await Deno.mkdir(`${location}/processed/sub`, { recursive: true });
    await Deno.remove(`${location}/processed/sub`);
    await Deno.symlink(`${dir}/victim`, `${location}/processed/sub`);
    await Deno.mkdir(`${location}/sub`);
    await Deno.writeTextFile(`${location}/sub/f`, "x");
    await assert.rejects(() => finalize("sub/f"), /processed\/sub" is a symbolic link/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/victim`)), []);
  });
});

Deno.test("finalizeFile() refuses a queued file whose subdirectory became a symlink", async () => {
  await withLocation(async (dir, location, finalize) => {
    await Deno.mkdir(`${location}/sub`);
    await Deno.writeTextFile(`${location}/sub/f`, "queued");
    await Deno.mkdir(`${dir}/other`);
    await Deno.writeTextFile(`${dir}/other/f`, "other!");
    await Deno.rename(`${location}/sub`, `${location}/sub.old`);
    await Deno.symlink(`${dir}/other`, `${location}/sub`);
    await assert.rejects(() => finalize("sub/f"), UnsafeSourceError);
    assert.equal(await Deno.readTextFile(`${dir}/other/f`), "other!");
  });
});

/** Finalizes files as `write` makes them, for `ms`, and counts the outcomes. */
async function finalizeRepeatedly(
  ms: number,
  write: (turn: number) => Promise<string | undefined>,
  finalize: (relpath: string) => Promise<string>,
): Promise<{ processed: number; refused: number }> {
  let processed = 0;
  let refused = 0;
  const until = Date.now() + ms;
  for (let turn = 0; Date.now() < until; turn++) {
    const relpath = await write(turn).catch(() => undefined);
    if (relpath === undefined) continue;
    try {
      if (await finalize(relpath) === "processed") processed++;
    } catch {
      refused++;
    }
  }
  return { processed, refused };
}

/**
 * Finalizes sub/d/passwd for 2 s while another process swaps sub/d for a link
 * to a directory outside Location that holds a file of the same name, and
 * returns how often that file was gone (deleted or moved) after a try.
 */
async function outsideLossesWhileSwapped(
  dir: string,
  location: string,
  finalize: (relpath: string) => Promise<string>,
): Promise<number> {
  await Deno.mkdir(`${location}/sub/d`, { recursive: true });
  await Deno.mkdir(`${dir}/victim`);
  let losses = 0;
  await whileSwapped(`${location}/sub/d`, `${dir}/victim`, async () => {
    const counts = await finalizeRepeatedly(2_000, async () => {
      await Deno.writeTextFile(`${dir}/victim/passwd`, "root:x:0:0");
      await Deno.writeTextFile(`${location}/sub/d/passwd`, "queued");
      return "sub/d/passwd";
    }, async (relpath) => {
      try {
        return await finalize(relpath);
      } finally {
        if ((await Deno.lstat(`${dir}/victim/passwd`).catch(() => undefined)) === undefined) {
          losses++;
        }
      }
    });
    assert.ok(counts.processed > 0, `no file was processed (${counts.refused} refused)`);
  });
  return losses;
}

Deno.test("finalizeFile() deletes nothing outside Location while a subdirectory is swapped for a symlink", async () => {
  await withLocation(async (dir, location, finalize) => {
    const deleted = await outsideLossesWhileSwapped(dir, location, finalize);
    assert.equal(deleted, 0, `a file outside Location was deleted ${deleted} times`);
  });
});

Deno.test("finalizeFile() places nothing outside Location while a processed/ subdirectory is swapped for a symlink", async () => {
  await withLocation(async (dir, location, finalize) => {
    await Deno.mkdir(`${location}/processed/sub`, { recursive: true });
    await Deno.mkdir(`${location}/sub`);
    await Deno.mkdir(`${dir}/victim`);
    await whileSwapped(`${location}/processed/sub`, `${dir}/victim`, async () => {
      const counts = await finalizeRepeatedly(2_000, async (turn) => {
        await Deno.writeTextFile(`${location}/sub/evil${turn}.sh`, "echo owned");
        return `sub/evil${turn}.sh`;
      }, finalize);
      assert.ok(counts.processed > 0, `no file was processed (${counts.refused} refused)`);
    });
    const placed = await Array.fromAsync(Deno.readDir(`${dir}/victim`));
    assert.deepEqual(placed.map((entry) => entry.name), [], "files placed outside Location");
  });
});

Deno.test("finalizeFile() without hard links renames, and files finalized together never replace one another", async () => {
  const { link, linkSync } = Deno;
  // A file system without hard links, or protected_hardlinks refusing another owner's file.
  const refused = () => new Deno.errors.PermissionDenied("Operation not permitted (os error 1)");
  Deno.link = () => Promise.reject(refused());
  Deno.linkSync = () => {
    throw refused();
  };
  try {
    await withLocation(async (_, location, finalize) => {
      // The newcomer report.csv wants report.1.csv, as the real report.1.csv does; the second
      // starts some file system calls after the first, in a subdirectory of its own each time.
      for (let lag = 0; lag < 8; lag++) {
        const dir = `lag${lag}`;
        await Deno.mkdir(`${location}/processed/${dir}`, { recursive: true });
        await Deno.writeTextFile(`${location}/processed/${dir}/report.csv`, "kept");
        await Deno.mkdir(`${location}/${dir}`);
        await Deno.writeTextFile(`${location}/${dir}/report.csv`, "new");
        await Deno.writeTextFile(`${location}/${dir}/report.1.csv`, "real 1");
        const outcomes = await Promise.all([
          finalize(`${dir}/report.csv`),
          (async () => {
            for (let call = 0; call < lag; call++) await Deno.lstat(location);
            return await finalize(`${dir}/report.1.csv`);
          })(),
        ]);
        assert.deepEqual(outcomes, ["processed", "processed"]);
        const processed = `${location}/processed/${dir}`;
        const contents = await Promise.all(
          (await Array.fromAsync(Deno.readDir(processed))).map((entry) =>
            Deno.readTextFile(`${processed}/${entry.name}`)
          ),
        );
        assert.deepEqual(contents.sort(), ["kept", "new", "real 1"], `lag ${lag}`);
      }
    });
  } finally {
    Object.assign(Deno, { link, linkSync });
  }
});

Deno.test("finalizeFile() without hard links moves no file outside Location when a subdirectory is swapped for a symlink just before the rename", async () => {
  const { linkSync, renameSync } = Deno;
  // protected_hardlinks refuses to link another owner's file: a user who can write sub makes
  // sure of it with a file of theirs, and swaps sub/d for a link to victim at the worst moment.
  Deno.linkSync = () => {
    throw new Deno.errors.PermissionDenied("Operation not permitted (os error 1)");
  };
  try {
    await withLocation(async (dir, location, finalize) => {
      await Deno.mkdir(`${location}/sub/d`, { recursive: true });
      await Deno.mkdir(`${dir}/victim`);
      await Deno.writeTextFile(`${dir}/victim/passwd`, "root:x:0:0");
      await Deno.writeTextFile(`${location}/sub/d/passwd`, "queued");
      Deno.renameSync = (from, to) => {
        Deno.renameSync = renameSync;
        renameSync(`${location}/sub/d`, `${location}/sub/d.real`);
        Deno.symlinkSync(`${dir}/victim`, `${location}/sub/d`);
        renameSync(from, to);
      };
      const outcome = await finalize("sub/d/passwd").catch((error) => error);
      assert.equal(
        await Deno.readTextFile(`${dir}/victim/passwd`).catch(() => "gone"),
        "root:x:0:0",
        "a file outside Location was moved into processed/",
      );
      assert.equal(outcome, "processed");
      assert.equal(await Deno.readTextFile(`${location}/processed/sub/d/passwd`), "queued");
      await assert.rejects(() => Deno.lstat(`${location}/sub/d.real/passwd`), Deno.errors.NotFound);
    });
  } finally {
    Object.assign(Deno, { linkSync, renameSync });
  }
});

Deno.test("finalizeFile() without hard links moves no file outside Location while a subdirectory is swapped for a symlink", async () => {
  const { linkSync } = Deno;
  Deno.linkSync = () => {
    throw new Deno.errors.PermissionDenied("Operation not permitted (os error 1)");
  };
  try {
    await withLocation(async (dir, location, finalize) => {
      const moved = await outsideLossesWhileSwapped(dir, location, finalize);
      assert.equal(moved, 0, `a file outside Location was moved ${moved} times`);
    });
  } finally {
    Object.assign(Deno, { linkSync });
  }
});

Deno.test("finalizeFile() keeps a new version renamed onto the source's name as the delivered one is removed", async () => {
  await withLocation(async (_, location, finalize) => {
    await Deno.mkdir(`${location}/sub`);
    await Deno.writeTextFile(`${location}/sub/status.json`, "delivered");
    await Deno.writeTextFile(`${location}/sub/.status.json.tmp`, "new version");
    // A producer that writes a temp file and renames it in, just as the delivered file goes.
    const { removeSync, renameSync } = Deno;
    let produced = false;
    const produceFirst = (path: string | URL) => {
      if (produced || !String(path).endsWith("status.json")) return;
      produced = true;
      renameSync(`${location}/sub/.status.json.tmp`, `${location}/sub/status.json`);
    };
    Deno.removeSync = (path, options) => {
      produceFirst(path);
      removeSync(path, options);
    };
    Deno.renameSync = (from, to) => {
      produceFirst(from);
      renameSync(from, to);
    };
    try {
      assert.equal(await finalize("sub/status.json"), "processed");
    } finally {
      Object.assign(Deno, { removeSync, renameSync });
    }
    assert.ok(produced, "the producer's rename never ran");
    assert.equal(await Deno.readTextFile(`${location}/processed/sub/status.json`), "delivered");
    assert.equal(
      await Deno.readTextFile(`${location}/sub/status.json`).catch(() => "(gone)"),
      "new version",
      "the new version was deleted with the delivered one",
    );
    assert.deepEqual([...Deno.readDirSync(`${location}/sub`)].map((entry) => entry.name), [
      "status.json",
    ]);
  });
});

Deno.test("numberedName() keeps the extension", () => {
  assert.equal(numberedName("report.csv", 1), "report.1.csv");
  assert.equal(numberedName("archive.tar.gz", 2), "archive.2.tar.gz");
  assert.equal(numberedName("README", 3), "README.3");
  assert.equal(numberedName("a.b.c.txt", 1), "a.b.c.1.txt");
});
