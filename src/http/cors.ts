/**
 * CORS, so that web pages on other origins (BAICHUAN_CORS_ORIGINS) can call the API with Connect
 * or gRPC-Web from a browser. Preflight requests of an allowed origin are answered here; other
 * answers get the headers browsers need to read them. Requests without an Origin header, and
 * those of an origin not allowed, are served as before (a browser then withholds the answer from
 * the page). No credentials are allowed: the API's bearer token travels in a header the page sets.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { cors as connectCors } from "@connectrpc/connect";

/** Header fields a page may send: those of Connect and gRPC-Web, the token and a request id. */
const ALLOWED_HEADERS = [...connectCors.allowedHeaders, "authorization", "x-request-id"].join(", ");
/** Header fields a page may read: those of Connect and gRPC-Web, and the request id. */
const EXPOSED_HEADERS = [...connectCors.exposedHeaders, "grpc-encoding", "grpc-accept-encoding", "x-request-id"].join(", ");
const ALLOWED_METHODS = connectCors.allowedMethods.join(", ");
/** How long a browser may keep a preflight's answer (seconds). */
const MAX_AGE = "7200";

/**
 * The origins allowed: `scheme://host[:port]` each, or `*` for any origin. Throws on anything else
 * (config.ts reports it).
 */
export function parseCorsOrigins(text: string | undefined): string[] {
  const origins = (text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const origin of origins) {
    if (origin === "*") continue;
    let url: URL | undefined;
    try {
      url = new URL(origin);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.origin !== origin) {
      throw new Error(
        `${JSON.stringify(origin.slice(0, 100))} is not an origin: expected scheme://host[:port] (http or https, no path), or *`,
      );
    }
  }
  return origins;
}

/**
 * Apply the CORS policy to a request. Returns true when it answered the request itself (a
 * preflight); the caller then does nothing more.
 */
export function applyCors(
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
  origins: readonly string[],
): boolean {
  const origin = req.headers.origin;
  if (origins.length === 0 || typeof origin !== "string") return false;
  const allowed = origins.includes("*") || origins.includes(origin);
  const preflight = req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined;
  res.setHeader("vary", "Origin"); // the answer depends on it (caches)
  if (!allowed) {
    if (!preflight) return false;
    const text = "this origin may not call the API (BAICHUAN_CORS_ORIGINS)\n";
    res.writeHead(403, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(text) });
    res.end(text);
    return true;
  }
  res.setHeader("access-control-allow-origin", origin);
  if (!preflight) {
    res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
    return false;
  }
  res.writeHead(204, {
    "access-control-allow-methods": ALLOWED_METHODS,
    "access-control-allow-headers": ALLOWED_HEADERS,
    "access-control-max-age": MAX_AGE,
    "content-length": "0",
  });
  res.end();
  return true;
}
