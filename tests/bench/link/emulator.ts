/**
 * The link emulator of the WAN bench: the C forwarder (forwarder.c, built
 * here with gcc into a temp dir at each start) between the two namespaces'
 * TUN devices, the profiles it emulates, and the measurements that check it
 * emulates them (probe.py inside the namespaces).
 *
 * C, not Python: 100 Mbit/s is ~8,300 packets/s each way, each needing a
 * timer accurate to well under a millisecond, on a 2-core machine shared
 * with sshd, ssh and the tools measured. The C forwarder was measured at
 * 100.00-100.38 Mbit/s (UDP flood) and 40.3-40.8 ms ping for `wan` (40 ms);
 * a Python one was not tried.
 */
import type { LinkNamespaces } from "./namespaces.ts";
import { track } from "./runner.ts";

/** One emulated link: the same in both directions. */
export interface LinkProfile {
  readonly name: string;
  readonly rateMbit: number;
  readonly rttMs: number;
  /** Probability that a packet is lost, each direction. */
  readonly loss: number;
  /** Size of the one large file of the bench's first workload, in MiB. */
  readonly largeMiB: number;
  /** Count of 64 KiB files of the second workload. */
  readonly smallFiles: number;
}

/** The profiles of issue 8. */
export const PROFILES: Readonly<Record<string, LinkProfile>> = {
  wan: { name: "wan", rateMbit: 100, rttMs: 40, loss: 0, largeMiB: 64, smallFiles: 100 },
  lossy: { name: "lossy", rateMbit: 100, rttMs: 60, loss: 0.01, largeMiB: 16, smallFiles: 100 },
  sat: { name: "sat", rateMbit: 50, rttMs: 600, loss: 0.005, largeMiB: 8, smallFiles: 50 },
  flaky: { name: "flaky", rateMbit: 20, rttMs: 200, loss: 0.02, largeMiB: 8, smallFiles: 100 },
};

/** `100 Mbit/s, 60 ms RTT, 1 % loss`. */
export function describeProfile(profile: LinkProfile): string {
  const loss = profile.loss > 0 ? `, ${+(profile.loss * 100).toFixed(2)} % loss` : "";
  return `${profile.rateMbit} Mbit/s, ${profile.rttMs} ms RTT${loss}`;
}

/**
 * The drop-tail queue in bytes: one bandwidth-delay product (at least 64
 * full packets), as a router sized by the classic rule of thumb.
 */
export function queueBytes(profile: LinkProfile): number {
  return Math.max(64 * 1500, Math.round(profile.rateMbit * 1e6 / 8 * profile.rttMs / 1000));
}

const HERE = new URL(".", import.meta.url).pathname;
export const PROBE = `${HERE}probe.py`;

/** A running forwarder. */
export interface Emulator {
  readonly pid: number;
  /** Stops the forwarder (SIGTERM, then SIGKILL) and returns its counters. */
  stop(): Promise<string>;
}

/** Compiles the forwarder into `dir`; returns the binary's path. */
export async function buildForwarder(dir: string): Promise<string> {
  const binary = `${dir}/forwarder`;
  const output = await new Deno.Command("gcc", {
    args: ["-O2", "-Wall", "-o", binary, `${HERE}forwarder.c`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(
      `Cannot compile the link forwarder: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return binary;
}

/** Starts the forwarder between the namespaces and waits until it holds both devices. */
export async function startEmulator(
  binary: string,
  link: LinkNamespaces,
  profile: LinkProfile,
  seed: number,
): Promise<Emulator> {
  const args = [
    link.shore,
    link.shoreTun,
    link.vessel,
    link.vesselTun,
    String(profile.rateMbit * 1e6),
    String(Math.round(profile.rttMs * 1000 / 2)),
    String(profile.loss),
    String(queueBytes(profile)),
    String(seed),
  ];
  const child = new Deno.Command(binary, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  let text = "";
  while (!text.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) {
      await child.status;
      throw new Error(`The link forwarder exited before it was ready: ${await stderr}`);
    }
    text += value;
  }
  let stopped: Promise<string> | undefined;
  return {
    pid: child.pid,
    stop: () =>
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already gone.
        }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // Already gone.
          }
        }, 2000);
        let rest = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          rest += value;
        }
        await child.status;
        clearTimeout(timer);
        await stderr;
        return rest.trim();
      })(),
  };
}

/** What the validation measured. */
export interface Validation {
  readonly lines: string[];
  /** Why the link is too far from its profile to measure with, if it is. */
  readonly failure?: string;
}

/** Runs probe.py in `ns`; resolves with its last JSON line. */
async function probe(
  ns: string,
  args: string[],
  onReady?: () => void,
): Promise<Record<string, number>> {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "python3", PROBE, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  let text = "";
  let last: Record<string, number> = {};
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const untrack = track(child.pid); // An interrupted bench kills it too.
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const lines = text.split("\n");
      text = lines.pop()!;
      for (const line of lines) {
        last = JSON.parse(line);
        if (last.ready) onReady?.();
      }
    }
    const status = await child.status;
    if (!status.success) throw new Error(`probe ${args[0]} failed in ${ns}: ${await stderr}`);
    return last;
  } finally {
    clearTimeout(timer);
    untrack();
  }
}

/** Starts a sink in the vessel namespace and a sender in the shore's; returns both results. */
async function pair(
  link: LinkNamespaces,
  sink: string[],
  sender: string[],
): Promise<[Record<string, number>, Record<string, number>]> {
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const sinkResult = probe(link.vessel, sink, ready);
  await Promise.race([isReady, sinkResult]);
  const sent = await probe(link.shore, sender);
  return [await sinkResult, sent];
}

/** Ping from the shore to the vessel: `sent`, `received`, `rttMinMs`, `rttMedianMs`, `rttMaxMs`. */
export function ping(
  link: LinkNamespaces,
  count: number,
  intervalSeconds: number,
): Promise<Record<string, number>> {
  return probe(link.shore, ["ping", link.vesselAddress, String(count), String(intervalSeconds)]);
}

const pct = (value: number) => `${(value * 100).toFixed(2)} %`;
const off = (measured: number, expected: number) => Math.abs(measured - expected) / expected;

/**
 * Measures the link from inside the namespaces: ping round trips, the rate
 * a UDP flood gets through (its loss too, at half the rate so the queue
 * never drops), and what one TCP stream achieves.
 */
export async function validate(link: LinkNamespaces, profile: LinkProfile): Promise<Validation> {
  const lines: string[] = [];
  const problems: string[] = [];
  const pings = Math.min(400, Math.round(8000 / Math.max(20, profile.rttMs)) * 10);
  const pinged = await ping(link, pings, 0.01);
  const rtt = pinged.rttMedianMs;
  const pingLoss = 1 - pinged.received / pinged.sent;
  const roundTripLoss = 1 - (1 - profile.loss) ** 2;
  lines.push(
    `ping: ${pinged.received}/${pinged.sent} answered (loss ${pct(pingLoss)}, expected ` +
      `${pct(roundTripLoss)} for a round trip), RTT min ${pinged.rttMinMs?.toFixed(1)} ms, ` +
      `median ${rtt?.toFixed(1)} ms (profile ${profile.rttMs} ms)`,
  );
  if (!rtt || off(rtt, profile.rttMs) > 0.1) problems.push(`RTT ${rtt?.toFixed(1)} ms`);

  const seconds = 3;
  const rateBps = profile.rateMbit * 1e6;
  const [flood, floodSent] = await pair(
    link,
    ["udp-sink", "5201", String(seconds)],
    ["udp-blast", link.vesselAddress, "5201", String(rateBps * 1.2), String(seconds + 0.5)],
  );
  lines.push(
    `UDP flood at 1.2x the rate: ${(flood.bps / 1e6).toFixed(2)} Mbit/s arrive ` +
      `(profile ${profile.rateMbit}; ${floodSent.sent} packets sent)`,
  );
  if (off(flood.bps, rateBps) > 0.02) problems.push(`rate ${(flood.bps / 1e6).toFixed(2)} Mbit/s`);

  if (profile.loss > 0) {
    const [half, halfSent] = await pair(
      link,
      ["udp-sink", "5202", String(seconds * 2)],
      ["udp-blast", link.vesselAddress, "5202", String(rateBps / 2), String(seconds * 2)],
    );
    const loss = 1 - half.packets / halfSent.sent;
    const sigma = Math.sqrt(profile.loss * (1 - profile.loss) / halfSent.sent);
    lines.push(
      `UDP at half the rate: ${pct(loss)} of ${halfSent.sent} packets lost (profile ` +
        `${pct(profile.loss)}, ${(off(loss, profile.loss) * 100).toFixed(1)} % off; ` +
        `one sigma is ${(sigma / profile.loss * 100).toFixed(1)} %)`,
    );
    if (off(loss, profile.loss) > Math.max(0.1, 3 * sigma / profile.loss)) {
      problems.push(`loss ${pct(loss)}`);
    }
  }

  const streamSeconds = Math.max(5, Math.ceil(profile.rttMs / 40));
  const [stream] = await pair(
    link,
    ["tcp-sink", "5203"],
    ["tcp-send", link.vesselAddress, "5203", String(streamSeconds)],
  );
  lines.push(
    `one TCP stream (${link.congestionControl}): ${(stream.bps / 1e6).toFixed(2)} Mbit/s ` +
      `after its first second`,
  );
  return {
    lines,
    failure: problems.length > 0
      ? `the link is off its profile: ${problems.join(", ")}`
      : undefined,
  };
}
