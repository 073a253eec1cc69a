/**
 * A BaiChuan service for tests: real Redis, real listener on a free port, the demo handlers plus any
 * extra ones, and clients for every protocol.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { TaskService } from "../../gen/baichuan/v1/task_pb.js";
import { Authenticator } from "../../src/core/auth.js";
import { BaiChuan, type BaiChuanOptions } from "../../src/engine/baichuan.js";
import type { SchedulerOptions } from "../../src/engine/scheduler.js";
import { type RunningServer, type ServerLimits, startServer } from "../../src/http/server.js";
import { createLogger, type Logger } from "../../src/ops/log.js";
import type { Handler } from "../../src/worker/handlers.js";
import type { WorkerOptions } from "../../src/worker/worker.js";
import { startRedis, type TestRedis } from "./redis.js";

// Where most tests have taken them from; they live in connect.ts (no Redis, usable by unit tests).
export { codeOf, failureOf } from "./connect.js";

export interface TestService {
  bc: BaiChuan;
  redis: TestRedis;
  server: RunningServer;
  baseUrl: string;
  clients: Record<Protocol, Client<typeof TaskService>>;
  close(): Promise<void>;
}

export type Protocol = "grpc" | "connect-h1" | "connect-h2" | "grpc-web";
export const PROTOCOLS: Protocol[] = ["grpc", "connect-h1", "connect-h2", "grpc-web"];

export interface TestServiceOptions extends Omit<BaiChuanOptions, "redis"> {
  /** Share a Redis with another service (default: start a new one). */
  redis?: TestRedis;
  handlers?: Record<string, Handler>;
  /** Load the demo handlers directory (default: true). */
  demo?: boolean;
  /** Run a worker (default: true). */
  worker?: boolean | WorkerOptions;
  /** Run the recovery sweep with this period in ms (default: no sweeper). */
  sweepMs?: number;
  /** Run the scheduler, which creates the tasks of schedules (default: false). */
  scheduler?: boolean | SchedulerOptions;
  serverLimits?: Partial<ServerLimits>;
  /** Bearer token entries (see auth.ts). */
  authTokens?: string[];
  /** Serve TLS with this PEM certificate and key; clients trust the certificate. */
  tls?: { cert: Buffer; key: Buffer };
  /** Serve GET /metrics without a token even when tokens are configured (BAICHUAN_METRICS_OPEN). */
  metricsOpen?: boolean;
  /**
   * Redis command timeout (default: 30 s, so a busy machine cannot turn a slow answer into
   * UNAVAILABLE; the product's default is 2 s). Ignored when the Redis URL has its own parameters.
   */
  socketTimeoutSeconds?: number;
  /** Origins allowed to call from a browser (BAICHUAN_CORS_ORIGINS). */
  corsOrigins?: string[];
  /** Serve gRPC reflection without a token even when tokens are configured (BAICHUAN_REFLECTION_OPEN). */
  reflectionOpen?: boolean;
}

export async function startService(options: TestServiceOptions = {}): Promise<TestService> {
  const ownRedis = options.redis === undefined;
  const redis = options.redis ?? (await startRedis());
  const log = options.logger ?? createLogger(process.env.TEST_LOG ? "debug" : "error");
  try {
    return await serve(options, redis, ownRedis, log);
  } catch (err) {
    if (ownRedis) await redis.destroy(); // leave no redis-server behind
    throw err;
  }
}

async function serve(options: TestServiceOptions, redis: TestRedis, ownRedis: boolean, log: Logger): Promise<TestService> {
  const url = redis.url.includes("?") ? redis.url : `${redis.url}?socket_timeout=${options.socketTimeoutSeconds ?? 30}`;
  const bc = await BaiChuan.connect({ ...options, redis: url, logger: log });
  if (options.demo !== false) await bc.handlers.loadDirectory("handlers");
  for (const [name, fn] of Object.entries(options.handlers ?? {})) bc.register(name, fn);
  const server = await startServer(bc, {
    host: "127.0.0.1",
    port: 0,
    log,
    limits: options.serverLimits ?? {},
    auth: new Authenticator(options.authTokens ?? []),
    ...(options.tls ? { tls: options.tls } : {}),
    ...(options.metricsOpen !== undefined ? { metricsOpen: options.metricsOpen } : {}),
    ...(options.corsOrigins ? { corsOrigins: options.corsOrigins } : {}),
    ...(options.reflectionOpen !== undefined ? { reflectionOpen: options.reflectionOpen } : {}),
  });
  if (options.worker !== false) {
    await bc.startWorker({ port: server.port, ...(typeof options.worker === "object" ? options.worker : {}) });
  }
  if (options.sweepMs !== undefined) {
    const leaseMs = typeof options.worker === "object" ? options.worker.leaseMs : undefined;
    bc.startSweeper({ periodMs: options.sweepMs, ...(leaseMs === undefined ? {} : { leaseMs }) });
  }
  if (options.scheduler) bc.startScheduler(typeof options.scheduler === "object" ? options.scheduler : {});
  const baseUrl = `${options.tls ? "https" : "http"}://127.0.0.1:${server.port}`;
  const nodeOptions = options.tls ? { ca: options.tls.cert } : {};
  const clients = {
    grpc: createClient(TaskService, createGrpcTransport({ baseUrl, nodeOptions })),
    "connect-h1": createClient(TaskService, createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions })),
    "connect-h2": createClient(TaskService, createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions })),
    "grpc-web": createClient(TaskService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions })),
  };
  return {
    bc,
    redis,
    server,
    baseUrl,
    clients,
    async close() {
      await server.close();
      await bc.close(1000);
      if (ownRedis) await redis.destroy();
    },
  };
}

/** POST JSON to a legacy URL over HTTP/1.1; returns status, headers and parsed body. */
export async function postJson(
  baseUrl: string,
  path: string,
  body: unknown,
): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(baseUrl + path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, headers: res.headers, json: await res.json() };
}

export async function getJson(baseUrl: string, path: string): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(baseUrl + path);
  return { status: res.status, headers: res.headers, json: await res.json() };
}

/** Poll a condition (tests only; the product never polls). */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A promise the test opens when it wants (to hold handlers, for example). */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}
