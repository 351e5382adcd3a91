/**
 * End to end through the CLI against real SSH servers on loopback: two
 * OpenSSH vessels and one Dropbear vessel, each seeing its own directory at
 * the same absolute path (a private mount namespace per server).
 */
import assert from "node:assert/strict";
import { HOSTILE_NAMES } from "./conformance.ts";
import { fileSha256, listFiles, randomBytes, runCli, sha256, Workspace } from "./cli_harness.ts";
import {
  serverUnavailable,
  skipNotice,
  startDropbear,
  startOpenSsh,
  type TestServer,
} from "./servers.ts";
import { vesselIni } from "./vessel_ini.ts";

const CHUNK = 65536;
const unavailable = serverUnavailable("openssh") ?? serverUnavailable("dropbear");
if (unavailable) skipNotice("e2e_sftp_test.ts", unavailable);

function sftpTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore: unavailable !== undefined, sanitizeResources: false, fn });
}

/** A mount point no other test uses, so parallel runs cannot collide. */
function freshMount(): string {
  return `/srv/cm-e2e-${crypto.randomUUID().slice(0, 8)}`;
}

sftpTest(
  "two OpenSSH vessels and a Dropbear vessel get every file byte-identical; processed/ gets the sources",
  async () => {
    const ws = await Workspace.create();
    const mount = freshMount();
    const servers: TestServer[] = [];
    try {
      await ws.mkdir("reports", "photos", "root-o1", "root-o2", "root-d");
      servers.push(await startOpenSsh({ binds: { [mount]: ws.path("root-o1") } }));
      servers.push(await startOpenSsh({ binds: { [mount]: ws.path("root-o2") } }));
      servers.push(await startDropbear({ binds: { [mount]: ws.path("root-d") } }));
      const [o1, o2, d] = servers;

      const files = new Map<string, Uint8Array>();
      const sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, Math.floor(3.5 * CHUNK)];
      for (const [i, size] of sizes.entries()) {
        files.set(`reports/size-${size}.bin`, randomBytes(size, i + 1));
      }
      for (const [i, name] of HOSTILE_NAMES.entries()) {
        files.set(`reports/hostile/${name}`, randomBytes(100 + i, i + 20));
      }
      files.set("reports/a/b/c/deep.txt", new TextEncoder().encode("deep"));
      files.set("photos/p.jpg", randomBytes(2 * CHUNK + 5, 77));
      for (const [path, data] of files) await ws.write(path, data);

      const config = await ws.config(`[MONSTER]
ChunkSize = ${CHUNK}
Database = state/cm.db

[Directory reports]
Location = reports
Destination = ${mount}/inbox/reports

[Directory photos]
Location = photos
Destination = ${mount}/inbox/photos

${vesselIni(o1, "openssh-1")}
${vesselIni(o2, "openssh-2", { IgnoreDirs: "photos" })}
${vesselIni(d, "dropbear")}
`);
      const result = await runCli(["once", "--config", config, "--timeout", "120"]);
      assert.equal(result.code, 0, result.stderr);

      const expected = (withPhotos: boolean) =>
        [...files.keys()].filter((path) => withPhotos || !path.startsWith("photos/")).sort().map(
          (path) => `inbox/${path}`,
        );
      for (
        const [root, server, withPhotos] of [
          ["root-o1", o1, true],
          ["root-o2", o2, false],
          ["root-d", d, true],
        ] as const
      ) {
        assert.deepEqual(
          await listFiles(ws.path(root)),
          expected(withPhotos),
          `${root}: files`,
        );
        for (const [path, data] of files) {
          if (!withPhotos && path.startsWith("photos/")) continue;
          assert.equal(
            await fileSha256(ws.path(`${root}/inbox/${path}`)),
            sha256(data),
            `${root}: ${JSON.stringify(path)}`,
          );
        }
        assert.deepEqual(await listFiles(`${server.dir}/vessel-tmp`), [], `${root}: TempDir`);
      }
      for (const [path, data] of files) {
        const [directory, ...rest] = path.split("/");
        assert.equal(
          await fileSha256(ws.path(`${directory}/processed/${rest.join("/")}`)),
          sha256(data),
        );
      }
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
      await ws.cleanup();
    }
  },
);

sftpTest(
  "a vessel with a wrong host key is refused loudly; the other is served; the source stays",
  async () => {
    const ws = await Workspace.create();
    const servers: TestServer[] = [];
    try {
      await ws.mkdir("outbox");
      servers.push(await startOpenSsh(), await startOpenSsh());
      const [good, bad] = servers;
      // The bad vessel's known_hosts holds the good server's key for the bad server's address.
      const wrongKnownHosts = await ws.write(
        "wrong_known_hosts",
        `[127.0.0.1]:${bad.port} ${good.hostPublicKey}\n`,
      );
      await ws.write("outbox/file.txt", "content");
      const config = await ws.config(`[MONSTER]
Database = state/cm.db
[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(good, "good", { TempDir: `${good.dir}/vessel-tmp` })}
${vesselIni(bad, "bad", { KnownHostsFile: wrongKnownHosts })}
`);
      const result = await runCli(["once", "--config", config, "--timeout", "60"]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /vessel "bad"/);
      assert.match(result.stderr, /host key/i);
      assert.match(result.stderr, /SHA256:[A-Za-z0-9+/]{43}/, "the fingerprint is shown");
      assert.equal(await Deno.readTextFile(ws.path("dest/file.txt")), "content");
      assert.equal(await Deno.readTextFile(ws.path("outbox/file.txt")), "content");
      assert.deepEqual(await listFiles(ws.path("outbox/processed")), []);

      const status = await runCli(["status", "--config", config, "--json"]);
      assert.equal(status.code, 0);
      const report = JSON.parse(status.stdout);
      const badRow = report.queue.find((row: { vessel: string }) => row.vessel === "bad");
      assert.equal(badRow.queuedFiles, 1);
      assert.match(badRow.lastError, /host key/i);
      const badVessel = report.vessels.find((v: { vessel: string }) => v.vessel === "bad");
      assert.equal(badVessel.state, "failing", "a host key problem needs the operator");
      assert.match(badVessel.lastError, /host key/i);
    } finally {
      await Promise.all(servers.map((server) => server.stop()));
      await ws.cleanup();
    }
  },
);

sftpTest("accept-new records an unknown host key, then refuses a changed one", async () => {
  const ws = await Workspace.create();
  const servers: TestServer[] = [];
  try {
    await ws.mkdir("outbox");
    servers.push(await startOpenSsh());
    const [server] = servers;
    const knownHosts = ws.path("ssh/known_hosts");
    const configFor = () =>
      ws.config(`[MONSTER]
Database = state/cm.db
[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(server, "v", { KnownHostsFile: knownHosts, StrictHostKeyChecking: "accept-new" })}
`);
    await ws.write("outbox/one.txt", "one");
    const first = await runCli(["once", "--config", await configFor(), "--timeout", "60"]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(await Deno.readTextFile(ws.path("dest/one.txt")), "one");
    const recorded = await Deno.readTextFile(knownHosts);
    assert.ok(recorded.includes(server.hostPublicKey.split(" ")[1]), recorded);

    // The same address now presents another key: refused even with accept-new.
    const other = await startOpenSsh();
    servers.push(other);
    await Deno.writeTextFile(knownHosts, recorded.replace(/^(\S+)/m, `[127.0.0.1]:${other.port}`));
    await ws.write("outbox/two.txt", "two");
    const config = await ws.config(`[MONSTER]
Database = state/cm.db
[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(other, "v", { KnownHostsFile: knownHosts, StrictHostKeyChecking: "accept-new" })}
`);
    const second = await runCli(["once", "--config", config, "--timeout", "60"]);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /host key/i);
    assert.equal(await fileSha256(ws.path("dest/two.txt")), undefined);
    assert.equal(await Deno.readTextFile(ws.path("outbox/two.txt")), "two");
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
    await ws.cleanup();
  }
});

sftpTest("check passes a healthy vessel and names a vessel without SFTP", async () => {
  const ws = await Workspace.create();
  const servers: TestServer[] = [];
  try {
    await ws.mkdir("outbox");
    servers.push(await startOpenSsh(), await startOpenSsh({ sftpServer: false }));
    const [healthy, broken] = servers;
    const healthyConfig = await ws.config(`[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(healthy, "healthy")}
`);
    const ok = await runCli(["check", "--config", healthyConfig]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /healthy/);
    assert.doesNotMatch(ok.stdout, /FAIL/);

    const brokenConfig = await ws.config(`[Directory outbox]
Location = outbox
Destination = ${ws.path("dest")}
${vesselIni(healthy, "healthy")}
${vesselIni(broken, "broken")}
`);
    const failing = await runCli(["check", "--config", brokenConfig]);
    assert.equal(failing.code, 1, failing.stdout + failing.stderr);
    assert.match(failing.stdout, /FAIL vessel "broken"/);
    assert.doesNotMatch(failing.stdout, /FAIL vessel "healthy"/);
    assert.match(failing.stdout, /sftp/i);
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
    await ws.cleanup();
  }
});
