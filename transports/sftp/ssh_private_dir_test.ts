import assert from "node:assert/strict";
import { pathExists } from "../../tests/cli_harness.ts";
import { PrivateSshDirectory, removeStaleDirectories } from "./ssh_private_dir.ts";

const TWENTY_MINUTES_AGO = () => new Date(Date.now() - 20 * 60_000);

/** Whether some open file holds the lock of `path` (flock: another descriptor conflicts). */
async function locked(path: string): Promise<boolean> {
  const file = await Deno.open(path, { read: true });
  try {
    return !await file.tryLock(true);
  } finally {
    file.close();
  }
}

Deno.test("only old directories whose owner no longer holds its lock are removed", async () => {
  const tmp = await Deno.makeTempDir();
  const held = await Deno.open(`${tmp}/held.lock`, { write: true, create: true });
  try {
    const dir = (name: string) => `${tmp}/contentmonster-ssh-${name}`;
    for (const name of ["1001-held", "1002-released", "1003-none", "1004-young", "1005-open"]) {
      await Deno.mkdir(dir(name), { mode: 0o700 });
    }
    // Open to others: its owner file may be anyone's (a FIFO would hang the check).
    await Deno.chmod(dir("1005-open"), 0o777);
    // A running process's lock; one a killed process left; none (before locks existed).
    await Deno.link(`${tmp}/held.lock`, `${dir("1001-held")}/owner.lock`);
    await held.lock(true);
    await Deno.writeTextFile(`${dir("1002-released")}/owner.lock`, "");
    await Deno.writeTextFile(`${dir("1002-released")}/login1.password`, "secret");
    for (const name of ["1001-held", "1002-released", "1003-none", "1005-open"]) {
      await Deno.utime(dir(name), TWENTY_MINUTES_AGO(), TWENTY_MINUTES_AGO());
    }

    await removeStaleDirectories(tmp);

    assert.ok(await pathExists(dir("1001-held")), "removed a directory whose owner runs");
    assert.equal(await pathExists(dir("1002-released")), false);
    assert.equal(await pathExists(dir("1003-none")), false);
    assert.ok(await pathExists(dir("1004-young")), "removed a directory made a moment ago");
    assert.ok(await pathExists(dir("1005-open")), "removed a directory others could write in");
  } finally {
    held.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a dead process's secrets go at once, however young its directory", async () => {
  // A daemon killed with -9 mid-login and restarted 5 s later (systemd) kept the copies of its
  // password and passphrase on disk for as long as the new one ran: the directory was young.
  const tmp = await Deno.makeTempDir();
  const held = await Deno.open(`${tmp}/held.lock`, { write: true, create: true });
  try {
    const dead = `${tmp}/contentmonster-ssh-1001-dead`;
    const running = `${tmp}/contentmonster-ssh-1002-running`;
    for (const dir of [dead, running]) {
      await Deno.mkdir(dir, { mode: 0o700 });
      for (const name of ["askpass", "login3.password", "login3.passphrase"]) {
        await Deno.writeTextFile(`${dir}/${name}`, "secret", { mode: 0o600 });
      }
    }
    await Deno.writeTextFile(`${dead}/owner.lock`, "");
    await Deno.link(`${tmp}/held.lock`, `${running}/owner.lock`);
    await held.lock(true);

    await removeStaleDirectories(tmp);

    const names = async (dir: string) =>
      (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(await names(dead), ["askpass", "owner.lock"]);
    assert.deepEqual(await names(running), [
      "askpass",
      "login3.passphrase",
      "login3.password",
      "owner.lock",
    ]);
  } finally {
    held.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a private directory emptied meanwhile is made again, 0700 and locked again", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const directory = await PrivateSshDirectory.create(tmp);
    assert.ok(await locked(`${directory.path}/owner.lock`));
    await Deno.remove(directory.path, { recursive: true });

    await directory.ensure();

    assert.equal((await Deno.lstat(directory.path)).mode! & 0o777, 0o700);
    assert.ok(await locked(`${directory.path}/owner.lock`), "the new owner file is not locked");
    await directory.dispose();
    assert.equal(await pathExists(directory.path), false);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
