import assert from "node:assert/strict";
import {
  type AncestorLookup,
  ancestorProblem,
  ancestorsOf,
  checkAncestors,
  type DirectoryStat,
} from "./private_dir.ts";
import { TransportError } from "./transport.ts";

const LOGIN = 1000;

function dir(mode: number, uid = 0): DirectoryStat {
  return { isDirectory: true, isSymlink: false, uid, mode };
}

function link(uid = 0): DirectoryStat {
  return { isDirectory: false, isSymlink: true, uid, mode: 0o777 };
}

Deno.test("ancestorProblem() accepts directories only root or the login user can change", () => {
  assert.equal(ancestorProblem("/", dir(0o755), LOGIN), undefined);
  assert.equal(ancestorProblem("/home/cm", dir(0o700, LOGIN), LOGIN), undefined);
  assert.equal(ancestorProblem("/srv/cm", dir(0o750, LOGIN), LOGIN), undefined);
  assert.equal(ancestorProblem("/root", dir(0o700), 0), undefined);
});

Deno.test("ancestorProblem() accepts a sticky directory others may write, as /tmp", () => {
  assert.equal(ancestorProblem("/tmp", dir(0o1777), LOGIN), undefined);
  assert.equal(ancestorProblem("/srv/drop", dir(0o1770, LOGIN), LOGIN), undefined);
});

Deno.test("ancestorProblem() refuses a directory group or others may write without the sticky bit", () => {
  const problem = ancestorProblem("/srv/shared", dir(0o777), LOGIN);
  assert.match(
    problem ?? "",
    /^"\/srv\/shared" above TempDir is writable by group or others without the sticky bit \(mode 0777\)/,
  );
  assert.match(
    problem ?? "",
    /who may move TempDir's path away .*: run `chmod go-w \/srv\/shared` \(or `chmod \+t`/,
  );
  assert.match(problem ?? "", /or set another TempDir$/);
  assert.match(ancestorProblem("/srv/team", dir(0o775, LOGIN), LOGIN) ?? "", /\(mode 0775\)/);
  assert.match(ancestorProblem("/srv/w", dir(0o2757), LOGIN) ?? "", /\(mode 2757\)/);
});

Deno.test("ancestorProblem() refuses a directory of another user, sticky or not", () => {
  const problem = ancestorProblem("/home/eve", dir(0o755, 1001), LOGIN);
  assert.match(
    problem ?? "",
    /^"\/home\/eve" above TempDir belongs to uid 1001, not to root or the login user \(uid 1000\)/,
  );
  assert.match(problem ?? "", /`chown root \/home\/eve` on the vessel or set another TempDir$/);
  assert.match(ancestorProblem("/scratch", dir(0o1777, 1001), LOGIN) ?? "", /belongs to uid 1001/);
});

Deno.test("ancestorProblem() accepts a symbolic link of root or the login user, whatever its mode", () => {
  assert.equal(ancestorProblem("/var/run", link(0), LOGIN), undefined);
  assert.equal(ancestorProblem("/home/cm/data", link(LOGIN), LOGIN), undefined);
});

Deno.test("ancestorProblem() refuses a symbolic link of another user", () => {
  assert.match(
    ancestorProblem("/srv/cm", link(1001), LOGIN) ?? "",
    /^"\/srv\/cm" above TempDir is a symbolic link belonging to uid 1001, .*set TempDir to a path that does not go through it$/,
  );
});

Deno.test("ancestorProblem() refuses what is not a directory", () => {
  const file = { isDirectory: false, isSymlink: false, uid: 0, mode: 0o644 };
  assert.match(
    ancestorProblem("/srv", file, LOGIN) ?? "",
    /^"\/srv" above TempDir is not a directory/,
  );
});

Deno.test("ancestorsOf() lists every directory above a path, from / down", () => {
  assert.deepEqual(ancestorsOf("/srv/shared/cm/tmp"), [
    "/",
    "/srv",
    "/srv/shared",
    "/srv/shared/cm",
  ]);
  assert.deepEqual(ancestorsOf("/tmp"), ["/"]);
  assert.deepEqual(ancestorsOf("/"), []);
});

/** A filesystem of `entries` (absent paths are missing) whose links `realPath` resolves. */
function fakeLookup(
  entries: Record<string, DirectoryStat>,
  real: Record<string, string> = {},
): AncestorLookup & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    lstat: (path) => {
      asked.push(path);
      return Promise.resolve(entries[path]);
    },
    realPath: (path) => Promise.resolve(real[path] ?? path),
  };
}

function isUnsafe(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof TransportError, String(error));
    assert.equal(error.code, "unsafe");
    assert.equal(error.retryable, false);
    assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("checkAncestors() asks for every lstat before it waits, even for the uid", async () => {
  const lookup = fakeLookup({ "/": dir(0o755), "/tmp": dir(0o1777) });
  const uid = Promise.withResolvers<number>();
  const checked = checkAncestors("/tmp/cm/parts", { vessel: "v", uid: uid.promise, lookup });
  assert.deepEqual(lookup.asked, ["/", "/tmp", "/tmp/cm"]);
  uid.resolve(LOGIN);
  assert.equal(await checked, false, "/tmp/cm is missing");
});

Deno.test("checkAncestors() resolves true when all are there and safe", async () => {
  const lookup = fakeLookup({ "/": dir(0o755), "/tmp": dir(0o1777), "/tmp/cm": dir(0o700, 7) });
  assert.equal(await checkAncestors("/tmp/cm/parts", { vessel: "v", uid: 7, lookup }), true);
});

Deno.test("checkAncestors() refuses the vessel naming the topmost unsafe directory", async () => {
  const lookup = fakeLookup({
    "/": dir(0o755),
    "/srv": dir(0o777),
    "/srv/shared": dir(0o755, 1001),
    "/srv/shared/cm": dir(0o700, LOGIN),
  });
  await assert.rejects(
    () => checkAncestors("/srv/shared/cm/tmp", { vessel: "web1", uid: LOGIN, lookup }),
    isUnsafe(/^Cannot use TempDir on vessel "web1": "\/srv" above TempDir is writable/),
  );
});

Deno.test("checkAncestors() judges what is there above a missing directory", async () => {
  const lookup = fakeLookup({ "/": dir(0o755), "/srv": dir(0o777) });
  await assert.rejects(
    () => checkAncestors("/srv/cm/tmp/parts", { vessel: "v", uid: LOGIN, lookup }),
    isUnsafe(/"\/srv" above TempDir/),
  );
});

Deno.test("checkAncestors() judges where a link above TempDir really leads", async () => {
  const entries = {
    "/": dir(0o755),
    "/var": dir(0o755),
    "/var/run": link(0),
    "/var/run/cm": dir(0o700, LOGIN),
    "/run": dir(0o755),
    "/run/cm": dir(0o700, LOGIN),
  };
  const safe = fakeLookup(entries, { "/var/run/cm": "/run/cm" });
  assert.equal(
    await checkAncestors("/var/run/cm/tmp", { vessel: "v", uid: LOGIN, lookup: safe }),
    true,
  );
  assert.deepEqual(safe.asked.slice(4), ["/", "/run", "/run/cm"]);
  const intoShared = fakeLookup({ ...entries, "/run": dir(0o777) }, { "/var/run/cm": "/run/cm" });
  await assert.rejects(
    () => checkAncestors("/var/run/cm/tmp", { vessel: "v", uid: LOGIN, lookup: intoShared }),
    isUnsafe(/"\/run" above TempDir is writable by group or others/),
  );
});
