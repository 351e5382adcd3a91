/** `contentmonster check`: probe every vessel. */
import type { Config } from "../config/types.ts";
import { logger, print } from "../log/logger.ts";
import { openTransport } from "../../transports/mod.ts";
import { formatTable } from "./format_table.ts";

/** Exit 0 when every vessel passes every check, 1 otherwise. */
export async function checkVessels(config: Config): Promise<number> {
  const results = await Promise.all(config.vessels.map(async (vessel) => {
    const destinations = config.directories
      .filter((directory) => !vessel.ignoreDirs.includes(directory.name))
      .map((directory) => directory.destination);
    const transport = await openTransport(vessel, logger(`vessel ${vessel.name}`));
    try {
      return { vessel: vessel.name, items: await transport.probe(destinations) };
    } finally {
      await transport.close();
    }
  }));
  const table = [["VESSEL", "CHECK", "RESULT", "DETAIL"]];
  const failing: string[] = [];
  for (const { vessel, items } of results) {
    for (const item of items) {
      table.push([vessel, item.check, item.ok ? "ok" : "FAIL", item.detail.replaceAll("\n", " ")]);
    }
    const failed = items.filter((item) => !item.ok);
    if (failed.length > 0) {
      failing.push(
        `vessel "${vessel}": ${failed.map((i) => `${i.check}: ${i.detail}`).join("; ")}`,
      );
    }
  }
  print(formatTable(table));
  if (failing.length === 0) {
    print(
      config.vessels.length === 1
        ? "the vessel passes"
        : `all ${config.vessels.length} vessels pass`,
    );
    return 0;
  }
  for (const line of failing) print(`FAIL ${line}`);
  return 1;
}
