/**
 * runDelivery() in process, against the scripted FakeTransport: the state
 * machine's branches without a child process or log scraping.
 */
import assert from "node:assert/strict";
import type { DirectoryConfig } from "../config/types.ts";
import { Store } from "../store/store.ts";
import { FakeTransport, sha256 } from "../../tests/fake_transport.ts";
import { type DeliveryContext, deliveryKey, runDelivery } from "./delivery.ts";
import { hashSource, toSourceStat, UnsafeSourceError } from "./source.ts";
import { type Transport, TransportError } from "../../transports/transport.ts";
import { LocalTransport } from "../../transports/local.ts";
import { PartWindow } from "./part_window.ts";

const CHUNK = 1024;

interface Shore<T extends Transport = FakeTransport> {
  readonly dir: string;
  readonly store: Store;
  readonly directory: DirectoryConfig;
  readonly transport: T;
  /** Writes a source file and queues it (with its identity) for vessels "fake" and "other". */
  queue(relpath: string, data: Uint8Array, identity?: boolean): Promise<number>;
  /** Runs one attempt of the delivery of `fileId` to "fake". */
  attempt(fileId: number): ReturnType<typeof runDelivery>;
  /** How many times the delivery asked for the source's hash. */
  readonly hashes: () => number;
}

async function withShore<T extends Transport = FakeTransport>(
  body: (shore: Shore<T>) => Promise<void>,
  options: { window?: PartWindow; vessel?: (dir: string) => T } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cm-delivery-" });
  const store = await Store.open(`${dir}/state.db`);
  const transport = options.vessel?.(dir) ?? new FakeTransport() as Transport as T;
  const directory = { name: "out", location: `${dir}/out`, destination: "/srv/in" };
  await Deno.mkdir(directory.location);
  let hashes = 0;
  const context: DeliveryContext = {
    store,
    transport,
    chunkSize: CHUNK,
    window: options.window,
    signal: new AbortController().signal,
    fileHash: (file, path, options) => {
      hashes++;
      return file.sha256 !== null && !options?.fresh
        ? Promise.resolve(file.sha256)
        : hashSource(path, file);
    },
  };
  const shore: Shore<T> = {
    dir,
    store,
    directory,
    transport,
    async queue(relpath, data, identity = true) {
      const path = `${directory.location}/${relpath}`;
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      await Deno.writeFile(path, data);
      const stat = toSourceStat(await Deno.lstat(path));
      return store.enqueue(
        "out",
        relpath,
        stat.size,
        stat.mtimeMs,
        ["fake", "other"],
        identity ? stat : {},
      ).fileId;
    },
    hashes: () => hashes,
    attempt(fileId) {
      const delivery = store.nextDeliveries("fake", Date.now() + 1e9, 100, [], true)
        .find((d) => d.file.id === fileId);
      assert.ok(delivery, `no delivery of file ${fileId}`);
      return runDelivery(context, delivery, directory);
    },
  };
  try {
    await body(shore);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function bytes(length: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed * 7 + (i >> 7)) & 0xff);
}

Deno.test("runDelivery() sends parts, verifies, publishes with the source's mode and cleans up", async () => {
  await withShore(async ({ directory, store, transport, queue, attempt }) => {
    const data = bytes(3 * CHUNK + 5);
    const fileId = await queue("a/b.bin", data);
    await Deno.chmod(`${directory.location}/a/b.bin`, 0o640);
    // chmod changed the ctime: queued again as the version it now is.
    const stat = toSourceStat(await Deno.lstat(`${directory.location}/a/b.bin`));
    store.fileChanged(fileId, stat.size, stat.mtimeMs, stat);
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/a/b.bin")!), sha256(data));
    assert.equal(transport.modes.get("/srv/in/a/b.bin"), 0o640);
    assert.equal(transport.count("putPart"), 4);
    assert.equal(transport.parts.size, 0, "parts removed");
    assert.deepEqual([...transport.files.keys()], ["/srv/in/a/b.bin"]);
  });
});

Deno.test("runDelivery() in state publishing finds the vessel's copy and sends nothing", async () => {
  await withShore(async ({ store, transport, queue, attempt }) => {
    const data = bytes(100);
    const fileId = await queue("f.bin", data);
    const delivery = store.nextDeliveries("fake", Date.now(), 10, [], true)[0];
    // The rename happened, then the shore died before recording it.
    assert.ok(store.markPublishing(delivery.id, 1, sha256(data)));
    transport.files.set("/srv/in/f.bin", data);
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(transport.count("putWhole") + transport.count("putPart"), 0);
    assert.equal(transport.count("publish"), 0);
    assert.equal(store.delivery(delivery.id)!.state, "done");
  });
});

Deno.test("runDelivery() in state publishing removes the parts of the copy it named, published or not", async () => {
  for (const published of [true, false]) {
    await withShore(async ({ store, transport, queue, attempt }) => {
      const data = bytes(3 * CHUNK + 5);
      const fileId = await queue("f.bin", data);
      const delivery = store.nextDeliveries("fake", Date.now(), 10, [], true)[0];
      store.startParts(delivery.id, delivery.file.version);
      transport.parts.set(
        deliveryKey(store, delivery.id, 0),
        new Map([0, 1, 2, 3].map((i) => [i, data.slice(i * CHUNK, (i + 1) * CHUNK)])),
      );
      // The shore died after the publish began, before the parts' removal beside it was
      // answered: the rename landed, or neither it nor its copy is there.
      assert.ok(store.markPublishing(delivery.id, 1, sha256(data)));
      if (published) transport.files.set("/srv/in/f.bin", data);
      assert.equal(await attempt(fileId), "delivered");
      assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
      assert.deepEqual([...transport.parts.keys()], [], `published ${published}: parts left`);
    });
  }
});

Deno.test("runDelivery() of a corrupted copy publishes nothing and succeeds on the next attempt", async () => {
  await withShore(async ({ transport, queue, attempt }) => {
    const data = bytes(2 * CHUNK);
    const fileId = await queue("f.bin", data);
    transport.script("assemble", () => bytes(2 * CHUNK, 9));
    await assert.rejects(() => attempt(fileId), /Verification of "\/srv\/in\/f\.bin" failed/);
    assert.equal(transport.files.size, 0, "no temp file, nothing published");
    assert.equal(transport.parts.size, 0, "the parts are sent again");
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
  });
});

Deno.test("runDelivery() of a one-part file verifies the vessel's copy against the bytes it read", async () => {
  await withShore(async ({ store, transport, queue, attempt, hashes }) => {
    const data = bytes(CHUNK - 1);
    const fileId = await queue("f.bin", data);
    transport.script("putWhole", () => bytes(CHUNK - 1, 5));
    await assert.rejects(() => attempt(fileId), /Verification of "\/srv\/in\/f\.bin" failed/);
    assert.equal(transport.files.size, 0, "a corrupted copy is never published");
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
    assert.equal(store.file(fileId)!.sha256, sha256(data), "kept for the other vessel");
    // Only the failed verification read the source again (to rule out a change the stat missed).
    assert.equal(hashes(), 1, "the source is read once per attempt, to send it");
  });
});

Deno.test("runDelivery() of content changed under an unchanged stat sends it to every vessel again", async () => {
  await withShore(async ({ store, transport, queue, attempt }) => {
    // A replacement the stat cannot tell apart (identity unknown: queued by an older version)
    // left the hash of the old content cached by the vessel "other", which holds that content.
    const data = bytes(500);
    const fileId = await queue("f.bin", data, false);
    const other = store.nextDeliveries("other", Date.now(), 10, [], true)[0];
    assert.ok(store.markPublishing(other.id, 1, sha256(bytes(500, 2))));
    assert.ok(store.markDelivered(other.id, 1));
    assert.equal(await attempt(fileId), "changed");
    assert.equal(transport.files.size, 0, "nothing published that another vessel lacks");
    const again = store.nextDeliveries("other", Date.now() + 1e9, 10, [], true);
    assert.deepEqual(again.map((d) => d.file.id), [fileId], "the other vessel is sent it again");
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
    assert.equal(store.file(fileId)!.sha256, sha256(data));
  });
});

Deno.test("runDelivery() of a one-part file whose bytes another vessel verified otherwise sends it to every vessel again", async () => {
  await withShore(async ({ store, transport, queue, attempt }) => {
    // Both vessels take the new file at once; between their reads it is rewritten in place
    // with its size and mtime kept, within the second of its ctime: the stat cannot tell.
    const data = bytes(500);
    const fileId = await queue("f.bin", data);
    const other = store.nextDeliveries("other", Date.now(), 10, [], true)[0];
    transport.script("putWhole", () => {
      // The other vessel verified the other bytes, and is publishing them, meanwhile.
      assert.ok(store.markPublishing(other.id, 1, sha256(bytes(500, 2))));
      return undefined;
    });
    assert.equal(await attempt(fileId), "changed");
    assert.equal(transport.files.size, 0, "nothing published that the other vessel lacks");
    const again = store.nextDeliveries("other", Date.now() + 1e9, 10, [], true);
    assert.deepEqual(again.map((d) => [d.file.id, d.file.version]), [[fileId, 2]]);
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
  });
});

Deno.test("runDelivery() hands each part over to be read as it is sent, not read whole first", async () => {
  await withShore(async ({ transport, queue, attempt }) => {
    const data = bytes(3 * CHUNK + 7);
    const fileId = await queue("f.bin", data);
    assert.equal(await attempt(fileId), "delivered");
    const puts = transport.calls.filter(([call]) => call === "putPart");
    assert.equal(puts.length, 4);
    // A whole part in memory per part in flight held hundreds of MiB with many connections.
    assert.deepEqual(new Set(puts.map((call) => call[3])), new Set(["read as sent"]));
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
  });
});

Deno.test("runDelivery() starts the next part once a part's bytes have left, before it is stored", async () => {
  // One part's bytes fill the window: the next one used to wait for the part's last round
  // trips (close, rename, then its own create), and the connection idled meanwhile.
  const window = new PartWindow(2);
  window.maxBytes = CHUNK;
  await withShore(async ({ transport, queue, attempt }) => {
    const data = bytes(2 * CHUNK);
    const fileId = await queue("f.bin", data);
    const secondStarted = Promise.withResolvers<void>();
    transport.script("putPart", async () => {
      const timer = setTimeout(
        () => secondStarted.reject(new Error("part 1 waited for part 0 to be stored")),
        2000,
      );
      await secondStarted.promise.finally(() => clearTimeout(timer));
    });
    transport.script("putPart", () => secondStarted.resolve());
    assert.equal(await attempt(fileId), "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
    assert.equal(window.inFlight, 0, "every place given back");
  }, { window });
});

/** Scripts every putPart of a file of `count` parts: the last one hangs until `release`. */
function hangLastPart(transport: FakeTransport, count: number) {
  const release = Promise.withResolvers<void>();
  const hung = Promise.withResolvers<void>();
  for (let call = 0; call < count; call++) {
    transport.script("putPart", async ([, index]) => {
      if (index !== count - 1) return;
      hung.resolve();
      await release.promise;
    });
  }
  return { release: release.resolve, hung: hung.promise };
}

Deno.test("runDelivery() gives a part stuck at the end of a file a spare copy, and delivers without waiting for the stuck one", async () => {
  await withShore(async ({ transport, queue, attempt }) => {
    const data = bytes(4 * CHUNK);
    const fileId = await queue("f.bin", data);
    const { release, hung } = hangLastPart(transport, 4);
    const outcome = attempt(fileId);
    await hung;
    // The stuck copy's stream never answers while the attempt runs.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the attempt waited for the stuck part")), 10_000);
    });
    assert.equal(
      await Promise.race([outcome, late]).finally(() => clearTimeout(timer)),
      "delivered",
    );
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
    assert.deepEqual(
      transport.calls.filter(([call]) => call === "putSparePart").map(([, , index]) => index),
      [3],
    );
    assert.equal(transport.parts.size, 0, "parts removed");
    release();
  });
});

Deno.test("runDelivery() waits for a stuck part when the transport gives it no spare copy", async () => {
  await withShore(async ({ transport, queue, attempt }) => {
    transport.idleForSpares = false; // its stream still answers, or no connection is idle
    const data = bytes(4 * CHUNK);
    const fileId = await queue("f.bin", data);
    const { release, hung } = hangLastPart(transport, 4);
    let ended = false;
    const outcome = attempt(fileId).finally(() => ended = true);
    await hung;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(ended, false, "delivered without part 3");
    release();
    assert.equal(await outcome, "delivered");
    assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
    assert.equal(transport.count("putSparePart"), 0);
  });
});

Deno.test("runDelivery() of a source changed while sent queues the new version, publishing nothing", async () => {
  await withShore(async ({ directory, store, transport, queue, attempt }) => {
    const fileId = await queue("f.bin", bytes(6 * CHUNK)); // More parts than upload lanes: some are read after the change.
    transport.script("putPart", async () => {
      await Deno.writeFile(`${directory.location}/f.bin`, bytes(10), { append: true });
    });
    assert.equal(await attempt(fileId), "changed");
    assert.equal(store.file(fileId)!.version, 2);
    assert.equal(store.file(fileId)!.size, 6 * CHUNK + 10);
    assert.equal(transport.count("publish"), 0);
  });
});

Deno.test("runDelivery() of a vanished source drops the delivery and its leftovers", async () => {
  await withShore(async ({ directory, store, transport, queue, attempt }) => {
    const fileId = await queue("f.bin", bytes(6 * CHUNK)); // More parts than upload lanes: some are read after the change.
    transport.script("putPart", async () => {
      await Deno.remove(`${directory.location}/f.bin`);
    });
    assert.equal(await attempt(fileId), "dropped");
    assert.equal(transport.parts.size, 0);
    assert.equal(transport.count("publish"), 0);
    assert.equal(store.nextDeliveries("fake", Date.now(), 10, [], true).length, 0);
  });
});

Deno.test("runDelivery() with a part gone from the vessel forgets its parts and says part-missing", async () => {
  await withShore(async ({ store, transport, queue, attempt }) => {
    const fileId = await queue("f.bin", bytes(3 * CHUNK));
    transport.script("assemble", ([key]) => {
      transport.parts.get(key as string)!.delete(1); // the vessel rebooted, TempDir wiped
    });
    await assert.rejects(() => attempt(fileId), (error: unknown) => {
      assert.ok(error instanceof TransportError);
      assert.equal(error.code, "part-missing");
      return true;
    });
    const delivery = store.nextDeliveries("fake", Date.now() + 1e9, 10, [], true)[0];
    assert.equal(store.partsDone(delivery.id), 0, "every part is sent again");
    assert.equal(await attempt(fileId), "delivered");
    assert.ok(transport.files.has("/srv/in/f.bin"));
    assert.equal(
      deliveryKey(store, delivery.id, delivery.publishes).startsWith(store.instanceId),
      true,
    );
  });
});

Deno.test("runDelivery() refuses a source whose subdirectory was swapped for a symlink", async () => {
  await withShore(async ({ dir, directory, transport, queue, attempt }) => {
    const data = bytes(100);
    const fileId = await queue("sub/f.bin", data);
    const mtime = (await Deno.lstat(`${directory.location}/sub/f.bin`)).mtime!;
    await Deno.mkdir(`${dir}/elsewhere`);
    await Deno.writeFile(`${dir}/elsewhere/f.bin`, bytes(100, 5));
    await Deno.utime(`${dir}/elsewhere/f.bin`, mtime, mtime);
    await Deno.remove(`${directory.location}/sub`, { recursive: true });
    await Deno.symlink(`${dir}/elsewhere`, `${directory.location}/sub`);
    await assert.rejects(() => attempt(fileId), UnsafeSourceError);
    assert.equal(transport.count("putWhole") + transport.count("publish"), 0);
  });
});

Deno.test("runDelivery() of a file larger than the vessel's free space fails that delivery only", async () => {
  await withShore(async ({ transport, queue, attempt }) => {
    const fileId = await queue("big.bin", bytes(3 << 20));
    transport.freeBytes = 4 << 20;
    await assert.rejects(() => attempt(fileId), (error: unknown) => {
      assert.ok(error instanceof TransportError);
      assert.equal(error.code, "failed", "not no-space, which backs off the whole vessel");
      assert.match(error.message, /6291456 bytes needed .*4194304 free; this file waits/);
      return true;
    });
    assert.equal(transport.count("putPart"), 0);
  });
});

Deno.test("runDelivery() after a publish that may not have happened publishes the copy it named, sending nothing again", async () => {
  for (const size of [100, 3 * CHUNK]) {
    await withShore(async ({ transport, queue, attempt }) => {
      const data = bytes(size, 8);
      const fileId = await queue("f.bin", data);
      transport.script("publish", () => {
        throw new TransportError("the connection dropped", "connection");
      });
      await assert.rejects(() => attempt(fileId), TransportError);
      const sent = transport.count("putPart") + transport.count("putWhole");
      const assembled = transport.count("assemble");

      assert.equal(await attempt(fileId), "delivered");
      assert.equal(sha256(transport.files.get("/srv/in/f.bin")!), sha256(data));
      assert.equal(transport.count("putPart") + transport.count("putWhole"), sent, "sent again");
      assert.equal(transport.count("assemble"), assembled, "assembled again");
      assert.deepEqual([...transport.files.keys()], ["/srv/in/f.bin"], "a temp file left");
    });
  }
});

Deno.test("runDelivery() after a publish whose rename may still land never lets it publish the next try's partial copy", async () => {
  for (const size of [100, 3 * CHUNK]) {
    await withShore(async ({ transport, queue, attempt }) => {
      const data = bytes(size, 9);
      const fileId = await queue("f.bin", data);
      const destination = "/srv/in/f.bin";
      // The rename left on a connection that then dropped: it may still land, late.
      let lateRename = () => {};
      transport.script("publish", ([tempPath]) => {
        lateRename = () => {
          const copy = transport.files.get(tempPath as string);
          if (!copy) return; // ENOENT: a late rename of a name that is gone does nothing
          transport.files.set(destination, copy);
          transport.files.delete(tempPath as string);
        };
        throw new TransportError("the connection dropped", "connection");
      });
      await assert.rejects(() => attempt(fileId), TransportError);
      // The copy it named is gone (a cleaner, a person): the next try sends the file again.
      for (const path of transport.files.keys()) {
        if (path !== destination) transport.files.delete(path);
      }

      // The late rename lands while the next try has written half of its copy.
      let publishedMeanwhile: Uint8Array | undefined;
      transport.script(size > CHUNK ? "assemble" : "putWhole", ([key]) => {
        transport.files.set(
          `/srv/in/.contentmonster-${key}.tmp`,
          data.slice(0, Math.floor(size / 2)),
        );
        lateRename();
        publishedMeanwhile = transport.files.get(destination);
      });
      assert.equal(await attempt(fileId), "delivered");
      if (publishedMeanwhile) {
        assert.equal(sha256(publishedMeanwhile), sha256(data), "a partial copy was published");
      }
      assert.equal(sha256(transport.files.get(destination)!), sha256(data));
    });
  }
});

/** A local vessel at `<dir>/vessel` whose next publish is cut before its rename is answered. */
class CutPublish extends LocalTransport {
  readonly root: string;
  /** The temp path of the publish cut, whose rename is still on the way. */
  inFlight: string | undefined;
  #cut = false;

  constructor(dir: string) {
    super({ name: "fake", root: `${dir}/vessel`, tempDir: "/tmp/cm", fsync: false });
    this.root = `${dir}/vessel`;
  }

  cutNextPublish(): void {
    this.#cut = true;
  }

  override publish(tempPath: string, destination: string): Promise<void> {
    if (!this.#cut) return super.publish(tempPath, destination);
    this.#cut = false;
    this.inFlight = tempPath;
    return Promise.reject(new TransportError("the connection dropped", "connection"));
  }

  /** The rename the cut publish sent lands now; `NotFound` if its copy is gone. */
  async lateRename(destination: string): Promise<void> {
    await Deno.rename(`${this.root}${this.inFlight}`, `${this.root}${destination}`);
  }
}

/**
 * Lands the cut publish's rename now, and checks that it failed for want of
 * its copy and that the destination still holds `expected`.
 */
async function assertLateRenameLost(
  transport: CutPublish,
  destination: string,
  expected: Uint8Array,
  message: string,
): Promise<void> {
  const late = await transport.lateRename(destination).catch((error) => error);
  assert.equal(
    sha256(await Deno.readFile(`${transport.root}${destination}`)),
    sha256(expected),
    message,
  );
  assert.ok(late instanceof Deno.errors.NotFound, `the late rename: ${late}`);
}

Deno.test("runDelivery() of a new version after a publish whose rename may still land removes the copy it named before publishing", async () => {
  for (const size of [100, 3 * CHUNK]) {
    // The new version is seen by the attempt (the stat at its start), or by the watcher first.
    for (const seenBy of ["attempt", "watcher"]) {
      await withShore<CutPublish>(async ({ directory, store, transport, queue, attempt }) => {
        const destination = "/srv/in/f.bin";
        const fileId = await queue("f.bin", bytes(size, 1));
        transport.cutNextPublish();
        await assert.rejects(() => attempt(fileId), TransportError);
        const cut = store.nextDeliveries("fake", Date.now() + 1e9, 10, [], true)[0];
        assert.deepEqual([cut.state, cut.publishes], ["publishing", 1]);
        const newer = bytes(size + 7, 2);
        if (seenBy === "watcher") {
          await queue("f.bin", newer);
        } else {
          await Deno.writeFile(`${directory.location}/f.bin`, newer);
          assert.equal(await attempt(fileId), "changed");
        }
        assert.equal(await attempt(fileId), "delivered");
        assert.equal(sha256(await Deno.readFile(`${transport.root}${destination}`)), sha256(newer));

        await assertLateRenameLost(
          transport,
          destination,
          newer,
          `${size} bytes, seen by the ${seenBy}: the older version was published over the newer`,
        );
      }, { vessel: (dir) => new CutPublish(dir) });
    }
  }
});

Deno.test("runDelivery() of a source vanished after a publish whose rename may still land removes the copy it named", async () => {
  for (const size of [100, 3 * CHUNK]) {
    await withShore<CutPublish>(async ({ directory, store, transport, queue, attempt }) => {
      const fileId = await queue("f.bin", bytes(size, 1));
      transport.cutNextPublish();
      await assert.rejects(() => attempt(fileId), TransportError);
      await Deno.remove(`${directory.location}/f.bin`);
      assert.equal(await attempt(fileId), "dropped");
      await assert.rejects(() => transport.lateRename("/srv/in/f.bin"), Deno.errors.NotFound);
      assert.equal(store.nextDeliveries("fake", Date.now() + 1e9, 10, [], true).length, 0);
    }, { vessel: (dir) => new CutPublish(dir) });
  }
});

Deno.test("runDelivery() after a publish whose rename may still land, of a copy no longer whole, removes that copy before publishing", async () => {
  for (const size of [100, 3 * CHUNK]) {
    await withShore<CutPublish>(async ({ transport, queue, attempt }) => {
      const destination = "/srv/in/f.bin";
      const data = bytes(size, 1);
      const fileId = await queue("f.bin", data);
      transport.cutNextPublish();
      await assert.rejects(() => attempt(fileId), TransportError);
      // Written on after its verification: the next try sends the file again.
      await Deno.writeFile(`${transport.root}${transport.inFlight}`, bytes(10, 3), {
        append: true,
      });
      assert.equal(await attempt(fileId), "delivered");

      await assertLateRenameLost(
        transport,
        destination,
        data,
        `${size} bytes: the altered copy was published`,
      );
    }, { vessel: (dir) => new CutPublish(dir) });
  }
});

Deno.test("runDelivery() that finds its file at the destination after a publish whose rename may still land removes the copy it named", async () => {
  for (const size of [100, 3 * CHUNK]) {
    await withShore<CutPublish>(async ({ store, transport, queue, attempt }) => {
      const destination = "/srv/in/f.bin";
      const data = bytes(size, 1);
      // The vessel holds these bytes already (the same file was sent before).
      await Deno.mkdir(`${transport.root}/srv/in`, { recursive: true });
      await Deno.writeFile(`${transport.root}${destination}`, data);
      const fileId = await queue("f.bin", data);
      transport.cutNextPublish();
      await assert.rejects(() => attempt(fileId), TransportError);
      assert.equal(await attempt(fileId), "delivered");
      // Moved to processed/; a later file of that name is another delivery, named anew.
      store.removeFile(fileId);
      const newer = bytes(size + 7, 2);
      assert.equal(await attempt(await queue("f.bin", newer)), "delivered");

      await assertLateRenameLost(
        transport,
        destination,
        newer,
        `${size} bytes: the older file was published over the newer`,
      );
    }, { vessel: (dir) => new CutPublish(dir) });
  }
});
