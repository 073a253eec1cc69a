/**
 * What the listener tells operators: Prometheus metrics at `GET /metrics` and one access log line
 * per request, both keyed by the request id every request carries (`x-request-id`).
 *
 * - Metrics live in a prom-client Registry of their own per server (never the global default
 *   registry), so several servers in one process do not collide. Counters of this process's task
 *   creates and worker runs come from BaiChuan's observer hooks; queue gauges are read from Redis
 *   at scrape time; RPCs are counted by a Connect interceptor (plain-gRPC WatchTask streams, which
 *   bypass Connect, by the listener); legacy URLs by the listener with the stat the bridge answered.
 * - The access log line is written by the listener when the response closes: request id, HTTP
 *   method, path, HTTP status, stat (legacy stat or gRPC code name), cost (seconds), client IP.
 *
 * See docs/architecture.md, "Metrics and logs", for every metric and its labels.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { TaskService } from "../../gen/baichuan/v1/task_pb.js";
import { isPlainGrpcWatch } from "../api/grpc-watch.js";
import type { Authenticator } from "../core/auth.js";
import type { Task } from "../core/domain.js";
import { abortedCall, legacyStat, PermissionDeniedError, UnauthenticatedError } from "../core/errors.js";
import type { BaiChuan, BaiChuanObserver, TaskRun } from "../engine/baichuan.js";
import type { FinishResult, QueueStats } from "../store/store.js";
import { type Logger, requestIdFrom } from "./log.js";

type NodeRequest = IncomingMessage | Http2ServerRequest;
type NodeResponse = ServerResponse | Http2ServerResponse;

/** What `GET /metrics` needs of an HTTP/1.1 or HTTP/2 request and response. */
interface MetricsRequest {
  readonly url?: string | undefined;
  readonly method?: string | undefined;
  readonly headers: IncomingHttpHeaders;
}
interface MetricsResponse {
  readonly headersSent: boolean;
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  end(chunk: string): unknown;
}

/** What the listener knows of a request while it runs. */
export interface RequestInfo {
  /** The caller's `x-request-id` when sane (log.ts), else a new one; echoed as `x-request-id`. */
  readonly id: string;
  /** performance.now() when the request arrived. */
  readonly started: number;
  /** Who answered it; unset for requests refused before a service saw them. */
  kind?: "rpc" | "legacy" | "metrics";
  /** The legacy stat or gRPC code name it was answered with. */
  stat?: string;
  /** A plain-gRPC WatchTask stream (grpc-watch.ts): counted by the listener, not the interceptor. */
  leanWatch?: boolean;
  /** The client's address, read when the request arrived (the socket may be gone when it ends). */
  readonly ip: string;
}

const requests = new WeakMap<object, RequestInfo>();

/** The listener's record of a request (undefined for a request the listener did not see). */
export function requestInfo(req: object): RequestInfo | undefined {
  return requests.get(req);
}

/** The legacy bridge's hook: the stat it answered `req` with. */
export function answeredLegacy(req: object, stat: string): void {
  const info = requests.get(req);
  if (!info) return;
  info.kind = "legacy";
  info.stat = stat;
}

/** The request's record, for RPC implementations and interceptors (set in the server's contextValues). */
export const kRequest = createContextKey<RequestInfo | undefined>(undefined, { description: "request id and outcome" });

/** Handler run times: from a millisecond to the 180 s default timeout and past it. */
const HANDLER_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Request times: unary calls take milliseconds, streams (WatchTask, health Watch) may last hours. */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600];

/** Legacy URLs that get their own `path` label; handler paths do too, anything else is "other". */
const LEGACY_PATHS = new Set(["/baichuan/task_create", "/baichuan/task_get", "/healthz"]);
/** The admin URLs (canghai.ts) share one label. */
const CANGHAI = /^\/canghai\//;

/**
 * A handler name no token pattern can match unless it matches every handler: patterns are made of
 * [A-Za-z0-9_.*-] between slashes, so only all-wildcard patterns (`/*`, `/*\/*`) match `:`.
 */
const EVERY_HANDLER_PROBE = "/:/:";

/** Process-wide default metrics (CPU, memory, event loop, GC), created once and shared by every registry. */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** What the scrape reads from Redis (the Store). */
export interface QueueSource {
  queuedHandlers(): Promise<string[]>;
  queueStats(handlers: string[]): Promise<QueueStats[]>;
}

/** The metrics of one server, in their own registry. */
export class Metrics implements BaiChuanObserver {
  readonly registry = new Registry();
  private readonly created: Counter<"handler">;
  private readonly finished: Counter<"handler">;
  private readonly failed: Counter<"handler">;
  private readonly retried: Counter<"handler">;
  private readonly canceled: Counter<"handler">;
  private readonly handlerSeconds: Histogram<"handler">;
  private readonly queued: Gauge<"handler">;
  private readonly running: Gauge<"handler">;
  private readonly scheduled: Gauge<"handler">;
  private readonly oldestAge: Gauge<"handler">;
  private readonly scrapeErrors: Counter;
  private readonly redisErrors: Counter;
  private readonly rpcs: Counter<"service" | "method" | "code">;
  private readonly rpcSeconds: Histogram<"service" | "method" | "code">;
  private readonly legacyRequests: Counter<"path" | "stat">;
  private readonly legacySeconds: Histogram<"path">;

  constructor(
    private readonly queues: QueueSource,
    watchStreams: () => number,
    private readonly log?: Logger,
  ) {
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Counter<L>({ name: `baichuan_${name}`, help, labelNames, registers });
    const gauge = (name: string, help: string) =>
      new Gauge<"handler">({ name: `baichuan_${name}`, help, labelNames: ["handler"], registers });
    this.created = counter(
      "tasks_created_total",
      "Tasks created by this process (enqueue, enqueueMany; unique hits not counted).",
      ["handler"],
    );
    this.finished = counter("tasks_finished_total", "Runs of this process's worker that ended the task finished.", ["handler"]);
    this.failed = counter("tasks_failed_total", "Runs of this process's worker that ended the task failed (no retry left).", [
      "handler",
    ]);
    this.retried = counter("tasks_retried_total", "Failed runs of this process's worker scheduled for a retry.", ["handler"]);
    this.canceled = counter("tasks_canceled_total", "Runs of this process's worker stopped by CancelTask.", ["handler"]);
    this.handlerSeconds = new Histogram({
      name: "baichuan_handler_duration_seconds",
      help: "Time handlers of this process's worker ran (the task's cost), requeues at shutdown left out.",
      labelNames: ["handler"],
      buckets: HANDLER_BUCKETS,
      registers,
    });
    this.queued = gauge("queue_depth", "Tasks waiting in the handler's queue (Redis, read at scrape time).");
    this.running = gauge("tasks_running", "Tasks of the handler started and not ended, on any worker (Redis, at scrape time).");
    this.scheduled = gauge("tasks_scheduled", "Tasks of the handler waiting for a retry (Redis, at scrape time).");
    this.oldestAge = gauge("queue_oldest_age_seconds", "Age of the oldest queued task of the handler; 0 when none (Redis).");
    this.scrapeErrors = counter("scrape_errors_total", "Scrapes that could not read the queue gauges from Redis.", []);
    this.redisErrors = counter("redis_errors_total", "Error events of the Redis command connection.", []);
    this.rpcs = counter("rpc_requests_total", "RPCs answered, by method and gRPC code; a stream counts when it ends.", [
      "service",
      "method",
      "code",
    ]);
    this.rpcSeconds = new Histogram({
      name: "baichuan_rpc_duration_seconds",
      help: "Time RPCs took, by method and gRPC code; for a stream, until it ended.",
      labelNames: ["service", "method", "code"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.legacyRequests = counter("legacy_requests_total", "Requests to the legacy JSON URLs, by path and stat.", [
      "path",
      "stat",
    ]);
    this.legacySeconds = new Histogram({
      name: "baichuan_legacy_duration_seconds",
      help: "Time legacy JSON requests took, by path.",
      labelNames: ["path"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    new Gauge({
      name: "baichuan_watch_streams_open",
      help: "WatchTask streams open on this server (both paths).",
      registers,
      collect() {
        this.set(watchStreams());
      },
    });
    const shared = processMetrics();
    for (const { name } of shared.getMetricsAsArray()) this.registry.registerMetric(shared.getSingleMetric(name)!);
  }

  tasksCreated(handler: string, count: number): void {
    this.created.inc({ handler }, count);
  }

  /**
   * A run of this process's worker ended. `run` (outcome and cost) is the worker's third onTaskEnd
   * argument; without it only retries can be told apart.
   */
  taskEnded(task: Task, result: FinishResult, run?: TaskRun): void {
    const labels = { handler: task.handler };
    if (result === "retry") this.retried.inc(labels);
    else if (result === "canceled") this.canceled.inc(labels);
    else if (result === "ended" && run) {
      if (run.kind === "finished") this.finished.inc(labels);
      else if (run.kind === "failed") this.failed.inc(labels);
      else if (run.kind === "canceled") this.canceled.inc(labels);
    }
    if (run && run.kind !== "requeue") this.handlerSeconds.observe(labels, run.cost);
  }

  redisError(): void {
    this.redisErrors.inc();
  }

  rpc(service: string, method: string, code: string, seconds: number): void {
    const labels = { service, method, code };
    this.rpcs.inc(labels);
    this.rpcSeconds.observe(labels, seconds);
  }

  legacy(path: string, stat: string, seconds: number): void {
    this.legacyRequests.inc({ path, stat });
    this.legacySeconds.observe({ path }, seconds);
  }

  /** The exposition text: queue gauges read from Redis now (left out if it fails), then every metric. */
  async render(): Promise<string> {
    let stats: QueueStats[] | undefined;
    try {
      // As AdminService.ListQueues: the handlers with a queue, then one queueStats call.
      stats = await this.queues.queueStats((await this.queues.queuedHandlers()).sort());
    } catch (err) {
      this.scrapeErrors.inc();
      this.log?.warn("metrics: could not read the queues from Redis", {
        error: err instanceof Error ? err.message : String(err),
      });
    }
    for (const gauge of [this.queued, this.running, this.scheduled, this.oldestAge]) gauge.reset();
    for (const s of stats ?? []) {
      const labels = { handler: s.handler };
      this.queued.set(labels, s.queued);
      this.running.set(labels, s.started);
      this.scheduled.set(labels, s.scheduled);
      this.oldestAge.set(labels, (s.oldestQueuedAgeMs ?? 0) / 1000);
    }
    return this.registry.metrics();
  }
}

/** A gRPC code's name as metrics and logs show it: OK, NOT_FOUND, ... */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "OK" : codeToString(code).toUpperCase();
}

export interface TelemetryOptions {
  log: Logger;
  auth: Authenticator;
  /** Serve /metrics without a token even when tokens are configured (BAICHUAN_METRICS_OPEN). */
  metricsOpen: boolean;
  /** WatchTask streams open on the server. */
  watchStreams: () => number;
  clientIp: (req: NodeRequest) => string;
}

/**
 * The listener's side: request ids, the access log, RPC and legacy metrics, and `GET /metrics`.
 * Wired in server.ts: `track` as the first 'request' listener of both HTTP servers, `interceptor`
 * on the Connect adapter, `kRequest` in its context values, `serveMetrics` around the fallback.
 */
export class Telemetry {
  readonly metrics: Metrics;
  private readonly unobserve: () => void;

  constructor(
    private readonly bc: BaiChuan,
    private readonly options: TelemetryOptions,
  ) {
    this.metrics = new Metrics(bc.store, options.watchStreams, options.log);
    this.unobserve = bc.observe(this.metrics);
  }

  /** Stop hearing the BaiChuan instance (the server closes). */
  close(): void {
    this.unobserve();
  }

  /** First listener of every request: its id (echoed as `x-request-id`), and the access log line when it closes. */
  readonly track = (req: NodeRequest, res: NodeResponse): void => {
    const info: RequestInfo = {
      id: requestIdFrom(req.headers["x-request-id"]),
      started: performance.now(),
      ip: this.options.clientIp(req),
    };
    if ("stream" in req && isPlainGrpcWatch(req)) info.leanWatch = true;
    requests.set(req, info);
    res.setHeader("x-request-id", info.id);
    res.once("close", () => this.ended(req, res, info));
  };

  private ended(req: NodeRequest, res: NodeResponse, info: RequestInfo): void {
    const seconds = (performance.now() - info.started) / 1000;
    const path = pathOf(req.url);
    let stat = info.stat;
    if (info.kind === "legacy" && stat !== undefined) {
      this.metrics.legacy(this.legacyPathLabel(path), statLabel(stat), seconds);
    } else if (info.kind === undefined) {
      // Not seen by a service: a plain-gRPC WatchTask stream, or a request refused by the
      // protocol layer (malformed, unsupported content type) or abandoned by its client.
      stat = codeName(responseCode(res));
      if (info.leanWatch) this.metrics.rpc(TaskService.typeName, TaskService.method.watchTask.name, stat, seconds);
    }
    // An HTTP/2 stream the client reset before it was answered gets no line of its own (a rapid
    // reset would write thousands): http2-guard.ts logs their number when the connection closes.
    if ("stream" in req && req.stream.aborted && !res.headersSent) return;
    this.options.log.info("access", {
      request_id: info.id,
      method: req.method,
      path: path.length > 256 ? `${path.slice(0, 256)}…` : path,
      status: res.statusCode,
      stat,
      cost: Number(seconds.toFixed(6)),
      ip: info.ip,
    });
  }

  /** A legacy path as a label: a fixed set, so a caller cannot add series by inventing paths. */
  private legacyPathLabel(path: string): string {
    if (LEGACY_PATHS.has(path) || this.bc.handlers.has(path)) return path;
    return CANGHAI.test(path) ? "/canghai/*" : "other";
  }

  /** Counts RPCs (a stream when it ends) and tells the access log their code. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    const started = performance.now();
    const info = req.contextValues.get(kRequest);
    const done = (err: unknown) => {
      // A stream cut short ends with why (its deadline, or its client gone), whatever error the
      // writes that failed after it raised.
      const code =
        req.stream && req.signal.aborted
          ? abortedCall(req.signal).code
          : err !== undefined
            ? ConnectError.from(err).code
            : undefined;
      const stat = codeName(code);
      this.metrics.rpc(req.service.typeName, req.method.name, stat, (performance.now() - started) / 1000);
      if (info) {
        info.kind = "rpc";
        info.stat = stat;
      }
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      done(err);
      throw err;
    }
    if (!res.stream) {
      done(undefined);
      return res;
    }
    return { ...res, message: observeStream(res.message, done) };
  };

  /** `GET /metrics` in front of `fallback` (the legacy bridge). */
  serveMetrics<Req extends MetricsRequest, Res extends MetricsResponse>(
    fallback: (req: Req, res: Res) => unknown,
  ): (req: Req, res: Res) => void {
    return (req, res) => {
      if (pathOf(req.url) !== "/metrics") {
        void fallback(req, res);
        return;
      }
      void this.answerMetrics(req, res);
    };
  }

  private async answerMetrics(req: MetricsRequest, res: MetricsResponse): Promise<void> {
    const info = requests.get(req);
    let status = 200;
    let headers: Record<string, string> = { "content-type": this.metrics.registry.contentType };
    let body: string;
    try {
      if (req.method !== "GET" && req.method !== "HEAD") {
        status = 405;
        throw new MethodError();
      }
      if (!this.options.metricsOpen) {
        const header = req.headers.authorization;
        const grant = this.options.auth.authenticate(Array.isArray(header) ? header[0] : header);
        // The metrics name every handler: a token limited to some handlers may not read them.
        if (!grant.allows(EVERY_HANDLER_PROBE)) {
          throw new PermissionDeniedError("this token is limited to some handlers; /metrics needs a token for every handler");
        }
      }
      body = await this.metrics.render();
      if (info) info.stat = "OK";
    } catch (err) {
      if (status === 200) status = err instanceof UnauthenticatedError ? 401 : err instanceof PermissionDeniedError ? 403 : 500;
      const stat = err instanceof MethodError ? "ERR_METHOD" : legacyStat(err);
      if (status === 500) this.options.log.error("metrics: rendering failed", { error: err });
      body = JSON.stringify({ stat, error: status === 500 ? "internal error" : (err as Error).message });
      headers = {
        "content-type": "application/json; charset=utf-8",
        ...(status === 401 ? { "www-authenticate": "Bearer" } : {}),
        ...(status === 405 ? { allow: "GET, HEAD" } : {}),
      };
      if (info) info.stat = stat;
    }
    if (info) info.kind = "metrics";
    if (res.headersSent) return;
    res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)) });
    res.end(req.method === "HEAD" ? "" : body);
  }
}

class MethodError extends Error {
  override message = "/metrics takes GET";
}

/** Calls `done` once when the stream ends: its error, or none (CANCELED is decided from the signal). */
async function* observeStream<T>(messages: AsyncIterable<T>, done: (err: unknown) => void): AsyncGenerator<T, void, undefined> {
  let error: unknown;
  try {
    yield* messages;
  } catch (err) {
    error = err;
    throw err;
  } finally {
    done(error);
  }
}

/** The path of a request URL, without its query. */
function pathOf(url: string | undefined): string {
  const raw = url ?? "";
  const q = raw.indexOf("?");
  return q < 0 ? raw : raw.slice(0, q);
}

/** A stat as a label: the known form (upper case, digits, `_`), else OTHER (handlers choose their own). */
function statLabel(stat: string): string {
  return /^[A-Z][A-Z0-9_]{0,39}$/.test(stat) ? stat : "OTHER";
}

/**
 * The gRPC code a response carried without passing a service: `grpc-status` in its trailers or
 * headers, else the code of its HTTP status (Connect's mapping; 200 is OK); CANCELED when the
 * response never ended (the client went away).
 */
function responseCode(res: NodeResponse): Code | undefined {
  let header: unknown;
  if ("stream" in res) header = res.stream?.sentTrailers?.["grpc-status"] ?? res.stream?.sentHeaders?.["grpc-status"];
  else header = res.getHeader("grpc-status");
  if (header !== undefined) {
    const code = Number(header);
    if (Number.isInteger(code) && code >= 0 && code <= 16) return code === 0 ? undefined : (code as Code);
  }
  if (!res.writableEnded) return Code.Canceled;
  if (res.statusCode === 200) return undefined;
  for (let code = Code.Canceled; code <= Code.Unauthenticated; code++) {
    if (codeToHttpStatus(code) === res.statusCode) return code;
  }
  return Code.Unknown;
}
