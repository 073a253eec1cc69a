/**
 * `npm start`: the BaiChuan service. Reads the environment (see config.ts), loads the handlers
 * directory, listens (answering NOT_SERVING / 503 and UNAVAILABLE until Redis is there), then runs
 * the worker once Redis answers, on one port.
 */
import { Authenticator } from "../core/auth.js";
import { BaiChuan } from "../engine/baichuan.js";
import type { RunningServer } from "../http/server.js";
import { createLogger, type Logger } from "../ops/log.js";
import { DEFAULT_REDIS_URL } from "../store/redis-url.js";
import { guardProcess } from "../worker/process-guard.js";
import { type Config, ConfigError, loadConfig, redisSetting } from "./config.js";
import { hasRedisServer, isListening, type PrivateRedis, startPrivateRedis } from "./dev-redis.js";

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`baichuan: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // The HTTP stack (the RPC services, the legacy routes, the dashboard, metrics) is loaded only when the API is
  // served: a worker-only process (BAICHUAN_API=0) starts without it. Its loading begins here, while
  // Redis is being reached, not when the listener is due.
  const http = config.api ? import("../http/server.js") : undefined;
  http?.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
  const log = createLogger(config.logLevel, { service: "baichuan" });
  let privateRedis: PrivateRedis | undefined;
  let redisUrl = config.redisUrl ?? DEFAULT_REDIS_URL;
  if (config.redisUrl === undefined && !(await isListening("127.0.0.1", 6379)) && hasRedisServer()) {
    privateRedis = await startPrivateRedis();
    redisUrl = privateRedis.url;
    log.info(
      "BAICHUAN_REDIS_URL is unset and nothing answers on 127.0.0.1:6379: started a private redis-server (data in .baichuan/, append-only)",
      { redis: redisUrl },
    );
  }

  const bc = new BaiChuan({
    redis: redisUrl,
    limits: config.limits,
    idempotencyTtl: config.idempotencyTtlSeconds,
    maxWorkerLosses: config.maxWorkerLosses,
    logger: log,
  });
  // A handler's stray error or rejection is logged, not fatal; process.exit() from a handler fails
  // its run instead of ending the process (process-guard.ts).
  guardProcess({ log, running: () => bc.runningTasks });
  const connected = connectWithRetries(bc, redisUrl, log);
  // A Redis that is there is ready before the port opens (as quickly as it answers, within its
  // connect timeout); one that is not does not keep the port closed: health checks then get
  // NOT_SERVING / 503 and calls UNAVAILABLE, instead of a refused connection, until it comes.
  const connectTimeout = redisSetting(redisUrl).connectTimeout ?? 2000;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([connected, new Promise((resolve) => (timer = setTimeout(resolve, connectTimeout)))]);
  clearTimeout(timer);

  if (config.worker) {
    await bc.handlers.loadDirectory(config.handlersDir, log).catch((err: unknown) => {
      log.error("could not load handlers", { dir: config.handlersDir, error: err instanceof Error ? err.message : String(err) });
      process.exit(2);
    });
  }
  let server: RunningServer | undefined;
  if (http) {
    const { startServer } = await http;
    const auth = new Authenticator(config.authTokens);
    server = await startServer(bc, {
      host: config.host,
      port: config.port,
      log,
      limits: config.serverLimits,
      auth,
      metricsOpen: config.metricsOpen,
      reflectionOpen: config.reflectionOpen,
      corsOrigins: config.corsOrigins,
      ...(config.tls ? { tls: config.tls } : {}),
    });
    log.info("listening", {
      host: config.host,
      port: server.port,
      tls: config.tls !== undefined,
      auth: auth.enabled ? `${config.authTokens.length} token(s)` : "off",
      protocols: ["grpc", "grpc-web", "connect", "legacy-json"],
      ...(bc.isReady() ? {} : { redis: "not ready yet: NOT_SERVING until it is" }),
    });
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      log.warn("second signal: exiting now", { signal });
      process.exit(1);
    }
    stopping = true;
    log.info("shutting down", { signal });
    await server?.close();
    await bc.close(config.shutdownGraceSeconds * 1000);
    privateRedis?.stop();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  // The worker, the sweep and the scheduler start once Redis answers (not at all if a signal came first).
  try {
    await connected;
  } catch (err) {
    if (stopping) return;
    throw err;
  }
  if (stopping) return;
  if (config.worker) {
    await bc.startWorker({
      concurrency: config.concurrency,
      port: server?.port ?? 0,
      leaseMs: config.leaseSeconds * 1000,
      retryBaseMs: config.retryBaseMs,
      debug: config.debug,
    });
  }
  bc.startSweeper({ periodMs: config.sweepSeconds * 1000, leaseMs: config.leaseSeconds * 1000 });
  bc.startScheduler();
}

/** Wait for Redis, saying what is wrong every few seconds instead of printing stack traces. */
async function connectWithRetries(bc: BaiChuan, url: string, log: Logger): Promise<void> {
  const { host, port, db } = redisSetting(url);
  const timer = setInterval(() => log.warn("waiting for Redis", { host, port, db }), 5000);
  try {
    await bc.waitForRedis();
    log.info("connected to Redis", { host, port, db });
  } finally {
    clearInterval(timer);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`baichuan: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
