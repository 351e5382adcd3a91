/**
 * Smoke test of the WAN bench's link emulator (tests/bench/link): two
 * namespaces joined by the C forwarder carry ping at the profile's round
 * trip, and removing them leaves no namespace behind; a sysctl set for the
 * shore stays inside its namespace.
 */
import assert from "node:assert/strict";
import { buildForwarder, ping, startEmulator } from "./bench/link/emulator.ts";
import { createNamespaces, ip, removeNamespaces, setSysctl } from "./bench/link/namespaces.ts";

function unavailable(): string | undefined {
  if (Deno.uid?.() !== 0) return "needs root (network namespaces, TUN devices)";
  for (const path of ["/usr/bin/gcc", "/usr/bin/python3", "/dev/net/tun"]) {
    try {
      Deno.statSync(path);
    } catch {
      return `${path} is missing`;
    }
  }
  return undefined;
}

const reason = unavailable();
if (reason) {
  Deno.stderr.writeSync(new TextEncoder().encode(`SKIPPED link emulator smoke test: ${reason}\n`));
}

Deno.test({
  name: "link emulator: namespaces joined by the forwarder ping at the profile's RTT, then vanish",
  ignore: reason !== undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cm-link-smoke-" });
    try {
      const forwarder = await buildForwarder(dir);
      const link = await createNamespaces("cubic");
      try {
        assert.match(link.congestionControl, /cubic/);
        const profile = {
          name: "smoke",
          rateMbit: 100,
          rttMs: 40,
          loss: 0,
          largeMiB: 0,
          smallFiles: 0,
        };
        const emulator = await startEmulator(forwarder, link, profile, 1);
        try {
          const result = await ping(link, 20, 0.02);
          assert.equal(result.received, 20, JSON.stringify(result));
          // The forwarder adds the delay; the probe's own loop adds under a millisecond.
          assert.ok(result.rttMinMs >= 40 && result.rttMedianMs < 44, JSON.stringify(result));
        } finally {
          assert.match(await emulator.stop(), /^a>b packets \d+/);
        }
      } finally {
        await removeNamespaces(link);
      }
      const left = await ip(["netns", "list"]);
      assert.ok(!left.includes(link.shore) && !left.includes(link.vessel), left);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "link emulator: --shore-sysctl changes the shore's namespace only, and network keys only",
  ignore: reason !== undefined,
  fn: async () => {
    const key = "net.ipv4.tcp_slow_start_after_idle";
    const path = "/proc/sys/net/ipv4/tcp_slow_start_after_idle";
    const machine = (await Deno.readTextFile(path)).trim();
    const link = await createNamespaces("cubic");
    try {
      const wanted = machine === "0" ? "1" : "0";
      assert.equal(await setSysctl(link.shore, key, wanted), wanted);
      assert.equal((await Deno.readTextFile(path)).trim(), machine, "the machine's own changed");
      await assert.rejects(setSysctl(link.shore, "kernel.hostname", "x"), /only network keys/);
      await assert.rejects(setSysctl(link.shore, "net.ipv4.no_such_key", "1"), /Cannot set/);
    } finally {
      await removeNamespaces(link);
    }
  },
});
