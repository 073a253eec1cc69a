/**
 * Redis connection settings from a URL in the original's form (BAICHUAN_REDIS_URL).
 */
import type { RedisOptions } from "ioredis";
import { parseBool } from "../core/validate.js";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0";

/** A Redis URL that cannot be used; the message says why. */
export class RedisUrlError extends Error {
  override name = "RedisUrlError";
  constructor(readonly reason: string) {
    super(`bad Redis URL: ${reason}`);
  }
}

/** Connection settings: ioredis options, plus the seed nodes when the URL names a Redis Cluster. */
export interface RedisSettings extends RedisOptions {
  /** Set for a Redis Cluster: the nodes to discover it from. */
  clusterNodes?: Array<{ host: string; port: number }>;
}

/**
 * Parse a Redis URL in the original's form, for example
 * `redis://@localhost:6379/0?socket_timeout=2&socket_connect_timeout=0.2&retry_on_timeout=false`,
 * or a Redis Cluster's seed nodes: `redis+cluster://[user:password@]host1:7000,host2:7001,...`.
 * - `socket_timeout` (seconds): longest wait for a command's reply (default: 2).
 * - `socket_connect_timeout` (seconds): longest wait to connect (default: 2).
 * - `retry_on_timeout`: resend a command interrupted by a dropped connection once (default: false).
 * `rediss://` and `rediss+cluster://` connect with TLS. A cluster has no database number.
 */
export function parseRedisUrl(text: string): RedisSettings {
  const cluster = /^(rediss?)\+cluster:\/\/(?:([^@/?#]*)@)?([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/.exec(text);
  if (/^rediss?\+cluster:/.test(text) && !cluster) {
    throw new RedisUrlError("is not a cluster URL: expected redis+cluster://[:password@]host1:port1,host2:port2");
  }
  let url: URL;
  try {
    // A cluster URL is read as a plain one naming its first node, for the credentials and parameters.
    url = new URL(
      cluster ? `${cluster[1]}://${cluster[2] ? `${cluster[2]}@` : ""}placeholder${cluster[4] ?? ""}${cluster[5] ?? ""}` : text,
    );
  } catch {
    throw new RedisUrlError(`is not a URL: expected redis://[:password@]host:port/db`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new RedisUrlError(`scheme must be redis://, rediss:// or redis+cluster://, got ${url.protocol}//`);
  }
  const db = url.pathname === "" || url.pathname === "/" ? 0 : Number(url.pathname.slice(1));
  if (!Number.isInteger(db) || db < 0 || db > 15) {
    throw new RedisUrlError(`database must be a number from 0 to 15, got ${JSON.stringify(url.pathname.slice(1))}`);
  }
  if (cluster && db !== 0) throw new RedisUrlError("a Redis Cluster has no database number: leave the path empty");
  const options: RedisSettings = {
    host: url.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1",
    port: url.port === "" ? 6379 : Number(url.port),
    db,
    commandTimeout: 2000,
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
  };
  if (cluster) {
    options.clusterNodes = cluster[3]!.split(",").map((node) => parseNode(node.trim()));
    options.host = options.clusterNodes[0]!.host;
    options.port = options.clusterNodes[0]!.port;
  }
  if (url.username) options.username = decodeURIComponent(url.username);
  if (url.password) options.password = decodeURIComponent(url.password);
  if (url.protocol === "rediss:") options.tls = { servername: options.host! };
  for (const [name, value] of url.searchParams) {
    switch (name) {
      case "socket_timeout":
        options.commandTimeout = secondsParam(name, value);
        break;
      case "socket_connect_timeout":
        options.connectTimeout = secondsParam(name, value);
        break;
      case "retry_on_timeout": {
        const parsed = parseBool(value);
        if (parsed === undefined) throw new RedisUrlError(`retry_on_timeout must be true or false, got ${JSON.stringify(value)}`);
        options.maxRetriesPerRequest = parsed ? 1 : 0;
        break;
      }
      default:
        throw new RedisUrlError(
          `unknown parameter ${JSON.stringify(name)} (known: socket_timeout, socket_connect_timeout, retry_on_timeout)`,
        );
    }
  }
  return options;
}

/** One `host:port` (`[::1]:7000` for IPv6) of a cluster URL. */
function parseNode(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65_535) {
    throw new RedisUrlError(`cluster node ${JSON.stringify(text.slice(0, 60))} is not host:port`);
  }
  return { host: m[1] ?? m[2]!, port };
}

function secondsParam(name: string, value: string): number {
  const seconds = Number(value);
  if (value.trim() === "" || !Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
    throw new RedisUrlError(`${name} must be a number of seconds between 0 and 3600, got ${JSON.stringify(value)}`);
  }
  return Math.max(1, Math.round(seconds * 1000));
}
