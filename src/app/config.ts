/**
 * Configuration from the environment. Every setting is checked at start-up; a bad one stops the
 * process with a message naming it.
 */
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { Authenticator, tokenSpecs } from "../core/auth.js";
import { DEFAULTS } from "../core/domain.js";
import { DEFAULT_LIMITS, type Limits, MAX_PARAMS_DEPTH, parseBool } from "../core/validate.js";
import { parseCorsOrigins } from "../http/cors.js";
import type { ServerLimits } from "../http/server.js";
import type { LogLevel } from "../ops/log.js";
import { parseRedisUrl, RedisUrlError } from "../store/redis-url.js";

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

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const redisUrl = env.BAICHUAN_REDIS_URL || undefined;
  if (redisUrl !== undefined) redisSetting(redisUrl); // fail early on a bad URL
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

/** A Redis URL setting, checked: a bad one is a ConfigError naming BAICHUAN_REDIS_URL. */
export function redisSetting(url: string): ReturnType<typeof parseRedisUrl> {
  try {
    return parseRedisUrl(url);
  } catch (err) {
    if (err instanceof RedisUrlError) throw new ConfigError("BAICHUAN_REDIS_URL", err.reason);
    throw err;
  }
}
