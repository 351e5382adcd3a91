/**
 * The two network namespaces of the WAN bench, "shore" and "vessel", each
 * with one TUN device the link emulator moves packets between. Addresses
 * come from 198.18.0.0/15 (RFC 2544 benchmarking) and exist only inside
 * these namespaces; nothing is routed to or from the machine's own network.
 */

/** TCP congestion control on the link's routes. */
export type CongestionControl = "cubic" | "bbr";

/** A pair of namespaces joined (once the emulator runs) by the link. */
export interface LinkNamespaces {
  readonly shore: string;
  readonly vessel: string;
  readonly shoreTun: string;
  readonly vesselTun: string;
  readonly shoreAddress: string;
  readonly vesselAddress: string;
  /** The congestion control each side's route uses, as the kernel reports it. */
  readonly congestionControl: string;
}

const PREFIX = "cmwan-";
const SHORE_ADDRESS = "198.18.0.1";
const VESSEL_ADDRESS = "198.18.0.2";

/** Runs `ip ARGS`; throws with ip's message when it fails. */
export async function ip(args: string[]): Promise<string> {
  const output = await new Deno.Command("ip", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(`Cannot run "ip ${args.join(" ")}": ${decoder.decode(output.stderr).trim()}`);
  }
  return decoder.decode(output.stdout);
}

/**
 * Creates both namespaces with their TUN devices, addresses and routes. The
 * route to the peer carries `congctl cubic` for CUBIC: the per-namespace
 * sysctl refuses CUBIC on this kernel, and new namespaces inherit BBR.
 */
export async function createNamespaces(cc: CongestionControl): Promise<LinkNamespaces> {
  await removeStale();
  const id = `${PREFIX}${Deno.pid}`;
  const sides = [
    { ns: `${id}-s`, tun: "cmlink0", address: SHORE_ADDRESS, peer: VESSEL_ADDRESS },
    { ns: `${id}-v`, tun: "cmlink1", address: VESSEL_ADDRESS, peer: SHORE_ADDRESS },
  ];
  const created: string[] = [];
  try {
    for (const side of sides) {
      await ip(["netns", "add", side.ns]);
      created.push(side.ns);
      const inNs = (args: string[]) => ip(["-n", side.ns, ...args]);
      await inNs(["link", "set", "lo", "up"]);
      await inNs(["tuntap", "add", "dev", side.tun, "mode", "tun"]);
      await inNs(["link", "set", side.tun, "mtu", "1500", "up"]);
      await inNs(["addr", "add", side.address, "peer", side.peer, "dev", side.tun]);
      const route = ["route", "replace", side.peer, "dev", side.tun, "src", side.address];
      await inNs(cc === "cubic" ? [...route, "congctl", "cubic"] : route);
    }
    const reported = await Promise.all(
      sides.map((side) => congestionControlOf(side.ns, side.peer)),
    );
    return {
      shore: sides[0].ns,
      vessel: sides[1].ns,
      shoreTun: sides[0].tun,
      vesselTun: sides[1].tun,
      shoreAddress: SHORE_ADDRESS,
      vesselAddress: VESSEL_ADDRESS,
      congestionControl: [...new Set(reported)].join(" / "),
    };
  } catch (error) {
    for (const ns of created) await ip(["netns", "del", ns]).catch(() => {});
    throw error;
  }
}

/** Deletes both namespaces (their TUN devices go with them). */
export async function removeNamespaces(link: LinkNamespaces): Promise<void> {
  for (const ns of [link.shore, link.vessel]) await ip(["netns", "del", ns]).catch(() => {});
}

/** Namespaces of this bench whose creator is gone (a run killed with SIGKILL). */
async function removeStale(): Promise<void> {
  for (const line of (await ip(["netns", "list"])).split("\n")) {
    const match = new RegExp(`^(${PREFIX}(\\d+)-[sv])\\b`).exec(line);
    if (!match || (await processExists(Number(match[2])))) continue;
    await ip(["netns", "del", match[1]]).catch(() => {});
  }
}

async function processExists(pid: number): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** The route's `congctl`, else the namespace's default. */
async function congestionControlOf(ns: string, peer: string): Promise<string> {
  const route = await ip(["-n", ns, "route", "get", peer]);
  const congctl = /congctl (\S+)/.exec(route)?.[1];
  if (congctl) return `${congctl} (route)`;
  const algorithm = await readInNamespace(ns, "/proc/sys/net/ipv4/tcp_congestion_control");
  return `${algorithm || "unknown"} (namespace default)`;
}

/** The trimmed text of `path` as a process inside `ns` reads it ("" if it cannot). */
async function readInNamespace(ns: string, path: string): Promise<string> {
  const output = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, "cat", path],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(output.stdout).trim();
}

/**
 * Sets the network sysctl `key` (`net.ipv4.tcp_slow_start_after_idle`) to
 * `value` inside `ns` only, and returns what the kernel then reports: an
 * operator's tuning of the shore, tried without touching this machine's own.
 */
export async function setSysctl(ns: string, key: string, value: string): Promise<string> {
  if (!/^net(\.[a-z0-9_]+)+$/.test(key)) {
    throw new Error(`Cannot set sysctl "${key}": only network keys (net.*) live in a namespace`);
  }
  const path = `/proc/sys/${key.replaceAll(".", "/")}`;
  const write = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, path],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!write.success) {
    const said = new TextDecoder().decode(write.stderr).trim();
    throw new Error(`Cannot set sysctl ${key} = ${value} in ${ns}: ${said}`);
  }
  return await readInNamespace(ns, path);
}
