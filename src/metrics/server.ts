/** Serves a registry at `/metrics` over HTTP with Deno's own server. */
import { CONTENT_TYPE } from "./exposition.ts";
import type { Registry } from "./registry.ts";

/** Where metrics are served, and how to stop. */
export interface MetricsServer {
  /** The address actually bound (the port is chosen when 0 was asked for). */
  readonly hostname: string;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Listens on `hostname:port` and answers `GET /metrics` with `registry`.
 * @throws {Error} naming the address when it cannot be bound (in use, not local).
 */
export function serveMetrics(registry: Registry, hostname: string, port: number): MetricsServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, (request) => {
      const { pathname } = new URL(request.url);
      if (pathname !== "/metrics") {
        return new Response("Not found: try /metrics\n", { status: 404 });
      }
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response("Method not allowed\n", {
          status: 405,
          headers: { allow: "GET, HEAD" },
        });
      }
      return new Response(registry.render(), { headers: { "content-type": CONTENT_TYPE } });
    });
  } catch (error) {
    throw new Error(`Cannot serve metrics on ${hostname}:${port}`, { cause: error });
  }
  return {
    hostname: server.addr.hostname,
    port: server.addr.port,
    close: () => server.shutdown(),
  };
}
