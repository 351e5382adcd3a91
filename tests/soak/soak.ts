/**
 * `deno task soak`: a stream of new files to two real OpenSSH vessels while
 * random faults hit the links, the vessels and the daemon, then a full
 * comparison. Exits 1 if anything was lost or corrupted.
 *
 *   deno task soak [--minutes 10] [--seed N]
 *
 * Faults: connections cut (RST or FIN) every 1-4 MiB, a stalled link, a
 * throttled or slow (100 ms RTT) link, a vessel refusing connections, a
 * vessel's TempDir wiped (reboot), and `kill -9` of the daemon.
 */
import { parseArgs } from "node:util";
import {
  CliProcess,
  fileSha256,
  listFiles,
  randomBytes,
  sha256,
  waitFor,
  Workspace,
} from "../cli_harness.ts";
import { FaultProxy, mulberry32 } from "../fault_proxy.ts";
import { startOpenSsh, type TestServer } from "../servers.ts";
import { vesselIni } from "../vessel_ini.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { minutes: { type: "string" }, seed: { type: "string" } },
});
const minutes = Number(values.minutes ?? 10);
const seed = Number(values.seed ?? Date.now() % 2 ** 31);
const random = mulberry32(seed);
const CHUNK = 1 << 20;
const TIMEOUT_S = 3;

function say(text: string) {
  Deno.stdout.writeSync(
    new TextEncoder().encode(`[soak ${new Date().toISOString().slice(11, 19)}] ${text}\n`),
  );
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));

/** Our hidden temp names beside destinations are not final names. */
function isTempName(relpath: string): boolean {
  return relpath.slice(relpath.lastIndexOf("/") + 1).startsWith(".");
}

interface Vessel {
  name: string;
  root: string;
  server: TestServer;
  proxy: FaultProxy;
}

say(`seed ${seed}, ${minutes} minutes`);
const ws = await Workspace.create();
const mount = `/srv/cm-soak-${crypto.randomUUID().slice(0, 8)}`;
const vessels: Vessel[] = [];
let daemon: CliProcess | undefined;
const expected = new Map<string, string>();
const faults: Record<string, number> = {};
const corrupt: string[] = [];
let dataBytes = 0;
let failed = false;

try {
  await ws.mkdir("outbox");
  for (const name of ["a", "b"]) {
    const root = ws.path(`root-${name}`);
    await Deno.mkdir(root);
    const server = await startOpenSsh({ binds: { [mount]: root } });
    const proxy = await FaultProxy.start({
      target: { hostname: "127.0.0.1", port: server.port },
      seed: seed + vessels.length,
    });
    vessels.push({ name, root, server, proxy });
  }
  const knownHosts = await ws.write(
    "known_hosts",
    vessels.map((v) => `[127.0.0.1]:${v.proxy.port} ${v.server.hostPublicKey}\n`).join(""),
  );
  const config = await ws.config(`[MONSTER]
ChunkSize = ${CHUNK}
Database = state/cm.db

[Directory outbox]
Location = outbox
Destination = ${mount}/inbox

${
    vessels.map((v) =>
      vesselIni(v.server, v.name, {
        Port: String(v.proxy.port),
        KnownHostsFile: knownHosts,
        Timeout: String(TIMEOUT_S),
      })
    ).join("\n")
  }
`);
  const start = () => new CliProcess(["run", "--config", config]);
  daemon = start();

  // Nothing may ever appear under a final name with other bytes than the source's.
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const vessel of vessels) {
        for (const relpath of await listFiles(`${vessel.root}/inbox`)) {
          if (isTempName(relpath)) continue; // not a final name
          const want = expected.get(relpath);
          const got = await fileSha256(`${vessel.root}/inbox/${relpath}`);
          if (got !== undefined && got !== want && !corrupt.includes(`${vessel.name}:${relpath}`)) {
            corrupt.push(`${vessel.name}:${relpath}`);
            say(`CORRUPT on vessel ${vessel.name}: ${relpath}`);
          }
        }
      }
      await sleep(250);
    }
  })();

  const end = Date.now() + minutes * 60_000;
  let fileNumber = 0;
  const producer = (async () => {
    while (Date.now() < end) {
      const kind = random();
      const size = kind < 0.6
        ? between(0, 64 << 10)
        : kind < 0.9
        ? between(64 << 10, 4 << 20)
        : between(4 << 20, 24 << 20);
      const relpath = `d${fileNumber % 7}/f${fileNumber}.bin`;
      const data = randomBytes(size, seed + fileNumber);
      expected.set(relpath, sha256(data));
      dataBytes += size;
      if (random() < 0.5) {
        await ws.write(`outbox/${relpath}`, data);
      } else {
        await ws.write(`outbox/.${fileNumber}.partial`, data);
        await Deno.mkdir(ws.path(`outbox/d${fileNumber % 7}`), { recursive: true });
        await Deno.rename(ws.path(`outbox/.${fileNumber}.partial`), ws.path(`outbox/${relpath}`));
      }
      fileNumber++;
      await sleep(between(100, 1500));
    }
  })();

  const injector = (async () => {
    while (Date.now() < end) {
      await sleep(between(5_000, 15_000));
      if (Date.now() >= end) break;
      const vessel = vessels[between(0, vessels.length - 1)];
      const fault =
        ["cut", "stall", "throttle", "latency", "refuse", "wipe", "kill"][between(0, 6)];
      faults[fault] = (faults[fault] ?? 0) + 1;
      say(`fault: ${fault}${fault === "kill" ? "" : ` on vessel ${vessel.name}`}`);
      switch (fault) {
        case "cut":
          vessel.proxy.cutAfter({
            minBytes: 1 << 20,
            maxBytes: 4 << 20,
            mode: random() < 0.5 ? "rst" : "fin",
          });
          await sleep(between(5_000, 15_000));
          break;
        case "stall":
          vessel.proxy.stall();
          await sleep(TIMEOUT_S * 1000 * 3);
          break;
        case "throttle":
          vessel.proxy.throttle(between(256 << 10, 4 << 20));
          await sleep(between(5_000, 15_000));
          break;
        case "latency":
          vessel.proxy.latency(50);
          await sleep(between(5_000, 15_000));
          break;
        case "refuse":
          vessel.proxy.refuse(true);
          await sleep(between(5_000, 40_000));
          break;
        case "wipe":
          await Deno.remove(`${vessel.server.dir}/vessel-tmp`, { recursive: true }).catch(() => {});
          break;
        case "kill":
          daemon!.kill("SIGKILL");
          await daemon!.exited();
          daemon = start();
          break;
      }
      vessel.proxy.clear();
      vessel.proxy.resume();
    }
  })();

  await Promise.all([producer, injector]);
  say(
    `stopped producing after ${fileNumber} files (${
      (dataBytes / 2 ** 20).toFixed(1)
    } MiB); waiting for the queue`,
  );
  for (const vessel of vessels) vessel.proxy.clear();
  await waitFor(
    async () => (await listFiles(ws.path("outbox/processed"))).length === expected.size,
    300_000,
    "every file in processed/",
  );
  polling = false;
  await poller;

  let lost = 0;
  for (const vessel of vessels) {
    const present = await listFiles(`${vessel.root}/inbox`);
    const temps = present.filter(isTempName);
    if (temps.length > 0) {
      say(`vessel ${vessel.name}: temp files left beside destinations: ${JSON.stringify(temps)}`);
      failed = true;
    }
    const extra = present.filter((relpath) => !expected.has(relpath) && !isTempName(relpath));
    if (extra.length > 0) {
      say(`vessel ${vessel.name}: unexpected files ${JSON.stringify(extra.slice(0, 5))}`);
      failed = true;
    }
    for (const [relpath, hash] of expected) {
      const got = await fileSha256(`${vessel.root}/inbox/${relpath}`);
      if (got === undefined) lost++;
      else if (got !== hash) corrupt.push(`${vessel.name}:${relpath}`);
    }
    const leftovers = await listFiles(`${vessel.server.dir}/vessel-tmp`);
    if (leftovers.length > 0) {
      say(`vessel ${vessel.name}: ${leftovers.length} leftovers in TempDir`);
    }
  }
  for (const [relpath, hash] of expected) {
    if ((await fileSha256(ws.path(`outbox/processed/${relpath}`))) !== hash) {
      corrupt.push(`processed:${relpath}`);
    }
  }
  const sentUp = vessels.reduce((sum, v) => sum + v.proxy.bytes.up, 0);
  const needed = dataBytes * vessels.length;
  say("--- results");
  say(
    `files: ${expected.size}, data: ${
      (dataBytes / 2 ** 20).toFixed(1)
    } MiB x ${vessels.length} vessels`,
  );
  say(`faults injected: ${JSON.stringify(faults)}`);
  say(
    `bytes sent to vessels: ${(sentUp / 2 ** 20).toFixed(1)} MiB for ${
      (needed / 2 ** 20).toFixed(1)
    } MiB of data (${((sentUp / needed - 1) * 100).toFixed(1)} % re-sent or overhead)`,
  );
  say(`lost: ${lost}, corrupted: ${corrupt.length}`);
  if (lost > 0 || corrupt.length > 0) failed = true;
} catch (error) {
  say(`soak failed: ${error instanceof Error ? error.stack : error}`);
  failed = true;
} finally {
  if (daemon) {
    daemon.kill("SIGTERM");
    await daemon.exited();
  }
  for (const vessel of vessels) {
    await vessel.proxy.close();
    await vessel.server.stop();
  }
  await ws.cleanup();
}
say(failed ? "FAILED" : "PASSED");
Deno.exit(failed ? 1 : 0);
