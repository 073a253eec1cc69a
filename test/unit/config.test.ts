/**
 * Settings from the environment (app/config.ts): defaults, ranges, every boolean setting taking
 * 1/0, true/false, yes/no and on/off in any case (as the README says), and every bad value stopping
 * start-up with a ConfigError naming the setting. (e2e.test.ts starts the real binary with a few bad
 * values: exit code 2, the message, no stack trace.)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig, redisSetting } from "../../src/app/config.js";
import { DEFAULT_LIMITS } from "../../src/core/validate.js";

/** The ConfigError loading `env` throws. */
function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`${JSON.stringify(env)} was accepted`);
}

const dir = mkdtempSync(join(tmpdir(), "baichuan-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("an empty environment gives the documented defaults", () => {
  expect(loadConfig({})).toEqual({
    host: "0.0.0.0",
    port: 8585,
    redisUrl: undefined,
    worker: true,
    api: true,
    handlersDir: "handlers",
    concurrency: 10,
    limits: DEFAULT_LIMITS,
    maxWorkerLosses: 3,
    serverLimits: {},
    logLevel: "info",
    leaseSeconds: 10,
    sweepSeconds: 15,
    retryBaseMs: 1000,
    shutdownGraceSeconds: 25,
    authTokens: [],
    tls: undefined,
    debug: false,
    metricsOpen: false,
    idempotencyTtlSeconds: 86_400,
    reflectionOpen: false,
    corsOrigins: [],
  });
});

it("reads every setting it is given", () => {
  const tokens = join(dir, "tokens");
  writeFileSync(tokens, "# one per line\nfile-token-0123456789=/billing/*\n");
  const config = loadConfig({
    BAICHUAN_HOST: "127.0.0.1",
    BAICHUAN_PORT: " 0 ",
    BAICHUAN_REDIS_URL: "redis://10.0.0.5:6380/2",
    BAICHUAN_HANDLERS_DIR: "my-handlers",
    BAICHUAN_CONCURRENCY: "64",
    BAICHUAN_MAX_PARAMS_BYTES: "2048",
    BAICHUAN_MAX_PARAMS_DEPTH: "8",
    BAICHUAN_MAX_HANDLER_LENGTH: "40",
    BAICHUAN_MAX_QUEUED: "0",
    BAICHUAN_MAX_RESULT_BYTES: "4096",
    BAICHUAN_MAX_WORKER_LOSSES: "5",
    BAICHUAN_MAX_BODY_BYTES: "100000",
    BAICHUAN_MAX_WATCHERS: "7",
    BAICHUAN_HEADERS_TIMEOUT_MS: "500",
    BAICHUAN_LOG_LEVEL: "DEBUG",
    BAICHUAN_LEASE_SECONDS: "2",
    BAICHUAN_SWEEP_SECONDS: "3",
    BAICHUAN_RETRY_BASE_MS: "50",
    BAICHUAN_SHUTDOWN_GRACE_SECONDS: "0",
    BAICHUAN_AUTH_TOKENS: "env-token-0123456789",
    BAICHUAN_AUTH_TOKEN_FILE: tokens,
    BAICHUAN_IDEMPOTENCY_TTL_SECONDS: "60",
    BAICHUAN_CORS_ORIGINS: "https://app.example, http://localhost:3000",
  });
  expect(config).toMatchObject({
    host: "127.0.0.1",
    port: 0,
    redisUrl: "redis://10.0.0.5:6380/2",
    handlersDir: "my-handlers",
    concurrency: 64,
    limits: { maxParamsBytes: 2048, maxParamsDepth: 8, maxHandlerLength: 40, maxQueued: 0, maxResultBytes: 4096 },
    maxWorkerLosses: 5,
    logLevel: "debug",
    leaseSeconds: 2,
    sweepSeconds: 3,
    retryBaseMs: 50,
    shutdownGraceSeconds: 0,
    authTokens: ["env-token-0123456789", "file-token-0123456789=/billing/*"],
    idempotencyTtlSeconds: 60,
    corsOrigins: ["https://app.example", "http://localhost:3000"],
  });
  // Only the listener limits that are set: the server keeps its defaults for the others.
  expect(config.serverLimits).toEqual({ maxBodyBytes: 100_000, maxWatchers: 7, headersTimeoutMs: 500 });
});

const BOOLEANS = [
  ["BAICHUAN_WORKER", "worker", true],
  ["BAICHUAN_API", "api", true],
  ["BAICHUAN_DEBUG", "debug", false],
  ["BAICHUAN_METRICS_OPEN", "metricsOpen", false],
  ["BAICHUAN_REFLECTION_OPEN", "reflectionOpen", false],
] as const;

const TRUE = ["1", "true", "yes", "on", "TRUE", "Yes", "ON", " yes "];
const FALSE = ["0", "false", "no", "off", "FALSE", "No", "OFF", " off "];

describe.each(BOOLEANS)("%s", (name, key, fallback) => {
  // The other of BAICHUAN_API and BAICHUAN_WORKER stays on, so that "off" is a valid configuration.
  it.each(TRUE)("%j is true", (value) => {
    expect(loadConfig({ [name]: value })[key]).toBe(true);
  });

  it.each(FALSE)("%j is false", (value) => {
    expect(loadConfig({ [name]: value })[key]).toBe(false);
  });

  it(`unset or empty is the default (${fallback})`, () => {
    expect(loadConfig({})[key]).toBe(fallback);
    expect(loadConfig({ [name]: "" })[key]).toBe(fallback);
  });

  it.each(["maybe", "2", "y", "enabled", "-1", "tru", "perhaps"])(
    "%j stops start-up with a message naming the setting",
    (value) => {
      const err = refusal({ [name]: value });
      expect(err.setting).toBe(name);
      expect(err.message).toBe(`${name}: must be 1/0, true/false, yes/no or on/off, got ${JSON.stringify(value)}`);
    },
  );
});

it("BAICHUAN_API=no with BAICHUAN_WORKER=off leaves nothing to do: refused", () => {
  const err = refusal({ BAICHUAN_API: "no", BAICHUAN_WORKER: "off" });
  expect(err.setting).toBe("BAICHUAN_API");
  expect(err.message).toBe("BAICHUAN_API: BAICHUAN_API=0 and BAICHUAN_WORKER=0 leave the process nothing to do");
});

describe("a bad value stops start-up with a message naming the setting", () => {
  it.each([
    ["BAICHUAN_PORT", "eighty", 'must be a whole number, got "eighty"'],
    ["BAICHUAN_PORT", "65536", "must be between 0 and 65535, got 65536"],
    ["BAICHUAN_PORT", "-1", 'must be a whole number, got "-1"'],
    ["BAICHUAN_PORT", "80.5", 'must be a whole number, got "80.5"'],
    ["BAICHUAN_CONCURRENCY", "0", "must be between 1 and 10000, got 0"],
    ["BAICHUAN_CONCURRENCY", "1e3", 'must be a whole number, got "1e3"'],
    ["BAICHUAN_MAX_PARAMS_DEPTH", "40", "must be between 1 and 32, got 40"],
    ["BAICHUAN_MAX_PARAMS_BYTES", "1", "must be between 2 and 536870912, got 1"],
    ["BAICHUAN_MAX_HANDLER_LENGTH", "203", "must be between 4 and 202, got 203"],
    ["BAICHUAN_MAX_QUEUED", "x", 'must be a whole number, got "x"'],
    ["BAICHUAN_MAX_RESULT_BYTES", "0", "must be between 2 and 536870912, got 0"],
    ["BAICHUAN_MAX_WORKER_LOSSES", "0", "must be between 1 and 1000, got 0"],
    ["BAICHUAN_MAX_BODY_BYTES", "15", "must be between 16 and 1073741824, got 15"],
    ["BAICHUAN_MAX_WATCHERS", "0", "must be between 1 and 10000000, got 0"],
    ["BAICHUAN_MAX_WATCHERS_PER_CONNECTION", "many", 'must be a whole number, got "many"'],
    ["BAICHUAN_MAX_CONNECTIONS", "0", "must be between 1 and 10000000, got 0"],
    ["BAICHUAN_HEADERS_TIMEOUT_MS", "99", "must be between 100 and 3600000, got 99"],
    ["BAICHUAN_LEASE_SECONDS", "0", "must be between 1 and 3600, got 0"],
    ["BAICHUAN_SWEEP_SECONDS", "3601", "must be between 1 and 3600, got 3601"],
    ["BAICHUAN_RETRY_BASE_MS", "0", "must be between 1 and 3600000, got 0"],
    ["BAICHUAN_SHUTDOWN_GRACE_SECONDS", "1h", 'must be a whole number, got "1h"'],
    ["BAICHUAN_IDEMPOTENCY_TTL_SECONDS", "0", "must be between 1 and 31536000, got 0"],
    ["BAICHUAN_LOG_LEVEL", "loud", 'must be debug, info, warn or error, got "loud"'],
    ["BAICHUAN_REDIS_URL", "http://localhost:6379", "scheme must be redis://, rediss:// or redis+cluster://, got http://"],
    ["BAICHUAN_REDIS_URL", "redis://localhost:6379/0?socket_timeout=fast", "socket_timeout must be a number of seconds"],
    ["BAICHUAN_REDIS_URL", "redis://localhost:6379/16", 'database must be a number from 0 to 15, got "16"'],
    ["BAICHUAN_AUTH_TOKENS", "short", "auth token entry 1: a token is at least 16 printable ASCII characters"],
    ["BAICHUAN_AUTH_TOKENS", "a-token-of-16-chars-or-more=billing", "auth token entry 1: patterns are handler paths"],
    ["BAICHUAN_AUTH_TOKEN_FILE", "/nonexistent/tokens", 'cannot read "/nonexistent/tokens": ENOENT'],
    ["BAICHUAN_TLS_CERT", "/nonexistent/cert.pem", 'cannot read "/nonexistent/cert.pem": ENOENT'],
    ["BAICHUAN_TLS_KEY", "/nonexistent/key.pem", 'cannot read "/nonexistent/key.pem": ENOENT'],
    ["BAICHUAN_CORS_ORIGINS", "https://app.example/path", '"https://app.example/path" is not an origin'],
    ["BAICHUAN_CORS_ORIGINS", "app.example", '"app.example" is not an origin'],
  ])("%s=%s", (name, value, message) => {
    const err = refusal({ [name]: value });
    expect(err.setting).toBe(name);
    expect(err.message.startsWith(`${name}: ${message}`), err.message).toBe(true);
  });

  it("TLS needs both files: the one missing is named", () => {
    const cert = join(dir, "cert.pem");
    writeFileSync(cert, "not a certificate");
    expect(refusal({ BAICHUAN_TLS_CERT: cert }).setting).toBe("BAICHUAN_TLS_KEY");
    expect(refusal({ BAICHUAN_TLS_KEY: cert }).setting).toBe("BAICHUAN_TLS_CERT");
    const pair = refusal({ BAICHUAN_TLS_CERT: cert, BAICHUAN_TLS_KEY: cert });
    expect(pair.setting).toBe("BAICHUAN_TLS_CERT");
    expect(pair.message).toMatch(/^BAICHUAN_TLS_CERT: the certificate and key are not a usable pair: /);
  });

  it("a token never appears in the message of a bad entry", () => {
    const secret = "my secret token with spaces";
    expect(refusal({ BAICHUAN_AUTH_TOKENS: secret }).message).not.toContain(secret);
  });
});

describe("redisSetting", () => {
  it("parses a good URL, and names BAICHUAN_REDIS_URL for a bad one", () => {
    expect(redisSetting("redis://h:1/2")).toMatchObject({ host: "h", port: 1, db: 2 });
    let err: unknown;
    try {
      redisSetting("redis://h/99");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe("BAICHUAN_REDIS_URL");
  });
});
