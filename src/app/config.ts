/**
 * Configuration from the environment. Every setting is checked at start-up; a bad one stops the
 * process with a message naming it.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import type { RedisOptions } from "ioredis";
import { Authenticator, tokenSpecs } from "../core/auth.js";
import { DEFAULTS } from "../core/domain.js";
import { DEFAULT_LIMITS, type Limits, MAX_PARAMS_DEPTH } from "../core/validate.js";
import { parseCorsOrigins } from "../http/cors.js";
import type { ServerLimits } from "../http/server.js";

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
  }
}

export interface Config {
  /** Listener address (default: 0.0.0.0). BAICHUAN_HOST */
  host: string;
  /** Listener port (default: 8585). BAICHUAN_PORT */
  port: number;
  /** Redis URL, or undefined when BAICHUAN_REDIS_URL is unset (then 127.0.0.1:6379/0, or a private server). */
  redisUrl: string | undefined;
  /** Run the worker in this process (default: true). BAICHUAN_WORKER=0 turns it off. */
  worker: boolean;
  /** Serve the API (default: true). BAICHUAN_API=0 makes a worker-only process. */
  api: boolean;
  /** Handlers directory (default: handlers). BAICHUAN_HANDLERS_DIR */
  handlersDir: string;
  /** Tasks run at once by this process's worker (default: 10). BAICHUAN_CONCURRENCY */
  concurrency: number;
  /** Limits on what callers send and handlers return (BAICHUAN_MAX_PARAMS_BYTES, BAICHUAN_MAX_PARAMS_DEPTH, BAICHUAN_MAX_HANDLER_LENGTH, BAICHUAN_MAX_QUEUED, BAICHUAN_MAX_RESULT_BYTES). */
  limits: Limits;
  /** A task whose worker was lost this many times fails as a poison task (default: 3). BAICHUAN_MAX_WORKER_LOSSES */
  maxWorkerLosses: number;
  /** Limits of the listener (BAICHUAN_MAX_BODY_BYTES, BAICHUAN_MAX_WATCHERS, BAICHUAN_MAX_WATCHERS_PER_CONNECTION, BAICHUAN_MAX_CONNECTIONS, BAICHUAN_HEADERS_TIMEOUT_MS). */
  serverLimits: Partial<ServerLimits>;
  /** Log level: debug, info, warn, error (default: info). BAICHUAN_LOG_LEVEL */
  logLevel: LogLevel;
  /** A running task whose lease is not renewed for this long is recovered (default: 10 s). BAICHUAN_LEASE_SECONDS */
  leaseSeconds: number;
  /** Time between recovery sweeps (default: 15 s). BAICHUAN_SWEEP_SECONDS */
  sweepSeconds: number;
  /** First retry delay, doubled for each further one (default: 1,000 ms). BAICHUAN_RETRY_BASE_MS */
  retryBaseMs: number;
  /** Bearer token entries (BAICHUAN_AUTH_TOKENS, BAICHUAN_AUTH_TOKEN_FILE); empty: no authentication. */
  authTokens: string[];
  /** TLS certificate and key, PEM (BAICHUAN_TLS_CERT and BAICHUAN_TLS_KEY: file paths). */
  tls: { cert: Buffer; key: Buffer } | undefined;
  /** Handler errors keep their stack traces and paths (default: false). BAICHUAN_DEBUG */
  debug: boolean;
  /** Time running handlers get to finish at shutdown before they are aborted and requeued (default: 25 s). BAICHUAN_SHUTDOWN_GRACE_SECONDS */
  shutdownGraceSeconds: number;
  /** Serve GET /metrics without a bearer token even when tokens are configured (default: false). BAICHUAN_METRICS_OPEN */
  metricsOpen: boolean;
  /** How long an idempotency key of a create is remembered (default: 86,400 s = 1 day). BAICHUAN_IDEMPOTENCY_TTL_SECONDS */
  idempotencyTtlSeconds: number;
  /** Serve gRPC server reflection without a bearer token even when tokens are configured (default: false). BAICHUAN_REFLECTION_OPEN */
  reflectionOpen: boolean;
  /** Origins whose web pages may call the API (CORS), `*` for any (default: none). BAICHUAN_CORS_ORIGINS, comma-separated */
  corsOrigins: string[];
}

export type LogLevel = "debug" | "info" | "warn" | "error";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0";

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const redisUrl = env.BAICHUAN_REDIS_URL || undefined;
  if (redisUrl !== undefined) parseRedisUrl(redisUrl); // fail early on a bad URL
  const config: Config = {
    host: env.BAICHUAN_HOST || "0.0.0.0",
    port: intSetting(env, "BAICHUAN_PORT", 8585, 0, 65_535),
    redisUrl,
    worker: boolSetting(env, "BAICHUAN_WORKER", true),
    api: boolSetting(env, "BAICHUAN_API", true),
    handlersDir: env.BAICHUAN_HANDLERS_DIR || "handlers",
    concurrency: intSetting(env, "BAICHUAN_CONCURRENCY", 10, 1, 10_000),
    limits: {
      maxParamsBytes: intSetting(env, "BAICHUAN_MAX_PARAMS_BYTES", DEFAULT_LIMITS.maxParamsBytes, 2, 512 * 1024 * 1024),
      maxParamsDepth: intSetting(env, "BAICHUAN_MAX_PARAMS_DEPTH", DEFAULT_LIMITS.maxParamsDepth, 1, MAX_PARAMS_DEPTH),
      maxHandlerLength: intSetting(env, "BAICHUAN_MAX_HANDLER_LENGTH", DEFAULT_LIMITS.maxHandlerLength, 4, 202),
      maxQueued: intSetting(env, "BAICHUAN_MAX_QUEUED", DEFAULT_LIMITS.maxQueued, 0, 1_000_000_000),
      maxResultBytes: intSetting(env, "BAICHUAN_MAX_RESULT_BYTES", DEFAULT_LIMITS.maxResultBytes, 2, 512 * 1024 * 1024),
    },
    maxWorkerLosses: intSetting(env, "BAICHUAN_MAX_WORKER_LOSSES", DEFAULTS.maxWorkerLosses, 1, 1000),
    serverLimits: optional({
      maxBodyBytes: optionalInt(env, "BAICHUAN_MAX_BODY_BYTES", 16, 1024 * 1024 * 1024),
      maxWatchers: optionalInt(env, "BAICHUAN_MAX_WATCHERS", 1, 10_000_000),
      maxWatchersPerConnection: optionalInt(env, "BAICHUAN_MAX_WATCHERS_PER_CONNECTION", 1, 1_000_000),
      maxConnections: optionalInt(env, "BAICHUAN_MAX_CONNECTIONS", 1, 10_000_000),
      headersTimeoutMs: optionalInt(env, "BAICHUAN_HEADERS_TIMEOUT_MS", 100, 3_600_000),
    }),
    logLevel: levelSetting(env),
    leaseSeconds: intSetting(env, "BAICHUAN_LEASE_SECONDS", 10, 1, 3600),
    sweepSeconds: intSetting(env, "BAICHUAN_SWEEP_SECONDS", 15, 1, 3600),
    retryBaseMs: intSetting(env, "BAICHUAN_RETRY_BASE_MS", 1000, 1, 3_600_000),
    shutdownGraceSeconds: intSetting(env, "BAICHUAN_SHUTDOWN_GRACE_SECONDS", 25, 0, 3600),
    authTokens: tokenSpecs(env.BAICHUAN_AUTH_TOKENS, fileSetting(env, "BAICHUAN_AUTH_TOKEN_FILE")?.toString("utf8")),
    tls: tlsSetting(env),
    debug: boolSetting(env, "BAICHUAN_DEBUG", false),
    metricsOpen: boolSetting(env, "BAICHUAN_METRICS_OPEN", false),
    idempotencyTtlSeconds: intSetting(env, "BAICHUAN_IDEMPOTENCY_TTL_SECONDS", 86_400, 1, 365 * 86_400),
    reflectionOpen: boolSetting(env, "BAICHUAN_REFLECTION_OPEN", false),
    corsOrigins: corsSetting(env),
  };
  try {
    new Authenticator(config.authTokens); // a malformed entry stops start-up here
  } catch (err) {
    throw new ConfigError("BAICHUAN_AUTH_TOKENS", (err as Error).message);
  }
  if (!config.api && !config.worker) {
    throw new ConfigError("BAICHUAN_API", "BAICHUAN_API=0 and BAICHUAN_WORKER=0 leave the process nothing to do");
  }
  return config;
}

function intSetting(env: Env, name: string, fallback: number, min: number, max: number): number {
  const text = env[name];
  if (text === undefined || text === "") return fallback;
  if (!/^\d+$/.test(text.trim())) throw new ConfigError(name, `must be a whole number, got ${JSON.stringify(text)}`);
  const value = Number(text.trim());
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function fileSetting(env: Env, name: string): Buffer | undefined {
  const path = env[name];
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(name, `cannot read ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
  }
}

function tlsSetting(env: Env): { cert: Buffer; key: Buffer } | undefined {
  const cert = fileSetting(env, "BAICHUAN_TLS_CERT");
  const key = fileSetting(env, "BAICHUAN_TLS_KEY");
  if (!cert && !key) return undefined;
  if (!cert || !key)
    throw new ConfigError(
      cert ? "BAICHUAN_TLS_KEY" : "BAICHUAN_TLS_CERT",
      "TLS needs both BAICHUAN_TLS_CERT and BAICHUAN_TLS_KEY",
    );
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError("BAICHUAN_TLS_CERT", `the certificate and key are not a usable pair: ${(err as Error).message}`);
  }
  return { cert, key };
}

function optionalInt(env: Env, name: string, min: number, max: number): number | undefined {
  return env[name] ? intSetting(env, name, 0, min, max) : undefined;
}

/** The entries of `values` that are set. */
function optional<T extends object>(values: { [K in keyof T]: T[K] | undefined }): Partial<T> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function boolSetting(env: Env, name: string, fallback: boolean): boolean {
  const text = env[name];
  if (text === undefined || text === "") return fallback;
  const parsed = parseBool(text);
  if (parsed === undefined) throw new ConfigError(name, `must be 1/0, true/false, yes/no or on/off, got ${JSON.stringify(text)}`);
  return parsed;
}

function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  return undefined;
}

function corsSetting(env: Env): string[] {
  try {
    return parseCorsOrigins(env.BAICHUAN_CORS_ORIGINS);
  } catch (err) {
    throw new ConfigError("BAICHUAN_CORS_ORIGINS", (err as Error).message);
  }
}

function levelSetting(env: Env): LogLevel {
  const text = (env.BAICHUAN_LOG_LEVEL || "info").toLowerCase();
  if (text === "debug" || text === "info" || text === "warn" || text === "error") return text;
  throw new ConfigError("BAICHUAN_LOG_LEVEL", `must be debug, info, warn or error, got ${JSON.stringify(text)}`);
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
  const setting = "BAICHUAN_REDIS_URL";
  const cluster = /^(rediss?)\+cluster:\/\/(?:([^@/?#]*)@)?([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/.exec(text);
  if (/^rediss?\+cluster:/.test(text) && !cluster) {
    throw new ConfigError(setting, "is not a cluster URL: expected redis+cluster://[:password@]host1:port1,host2:port2");
  }
  let url: URL;
  try {
    // A cluster URL is read as a plain one naming its first node, for the credentials and parameters.
    url = new URL(
      cluster ? `${cluster[1]}://${cluster[2] ? `${cluster[2]}@` : ""}placeholder${cluster[4] ?? ""}${cluster[5] ?? ""}` : text,
    );
  } catch {
    throw new ConfigError(setting, `is not a URL: expected redis://[:password@]host:port/db`);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new ConfigError(setting, `scheme must be redis://, rediss:// or redis+cluster://, got ${url.protocol}//`);
  }
  const db = url.pathname === "" || url.pathname === "/" ? 0 : Number(url.pathname.slice(1));
  if (!Number.isInteger(db) || db < 0 || db > 15) {
    throw new ConfigError(setting, `database must be a number from 0 to 15, got ${JSON.stringify(url.pathname.slice(1))}`);
  }
  if (cluster && db !== 0) throw new ConfigError(setting, "a Redis Cluster has no database number: leave the path empty");
  const options: RedisSettings = {
    host: url.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1",
    port: url.port === "" ? 6379 : Number(url.port),
    db,
    commandTimeout: 2000,
    connectTimeout: 2000,
    maxRetriesPerRequest: 0,
  };
  if (cluster) {
    options.clusterNodes = cluster[3]!.split(",").map((node) => parseNode(node.trim(), setting));
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
        if (parsed === undefined)
          throw new ConfigError(setting, `retry_on_timeout must be true or false, got ${JSON.stringify(value)}`);
        options.maxRetriesPerRequest = parsed ? 1 : 0;
        break;
      }
      default:
        throw new ConfigError(
          setting,
          `unknown parameter ${JSON.stringify(name)} (known: socket_timeout, socket_connect_timeout, retry_on_timeout)`,
        );
    }
  }
  return options;
}

/** One `host:port` (`[::1]:7000` for IPv6) of a cluster URL. */
function parseNode(text: string, setting: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65_535) {
    throw new ConfigError(setting, `cluster node ${JSON.stringify(text.slice(0, 60))} is not host:port`);
  }
  return { host: m[1] ?? m[2]!, port };
}

function secondsParam(name: string, value: string): number {
  const seconds = Number(value);
  if (value.trim() === "" || !Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
    throw new ConfigError(
      "BAICHUAN_REDIS_URL",
      `${name} must be a number of seconds between 0 and 3600, got ${JSON.stringify(value)}`,
    );
  }
  return Math.max(1, Math.round(seconds * 1000));
}
