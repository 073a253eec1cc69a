/**
 * What the listener tells operators: one access log line per request and the request metrics,
 * both keyed by the request id every request carries (`x-request-id`), and `GET /metrics`.
 *
 * - RPCs are counted by a Connect interceptor (plain-gRPC WatchTask streams, which bypass Connect,
 *   by the listener); legacy URLs by the listener with the stat the bridge answered.
 * - The access log line is written by the listener when the response closes: request id, HTTP
 *   method, path, HTTP status, stat (legacy stat or gRPC code name), cost (seconds), client IP.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { TaskService } from "../../gen/baichuan/v1/task_pb.js";
import type { Authenticator } from "../core/auth.js";
import { abortedCall, httpStatusOf, legacyStat, PermissionDeniedError } from "../core/errors.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { type Logger, requestIdFrom } from "../ops/log.js";
import { Metrics } from "../ops/metrics.js";
import { kRequest, type RequestInfo, requestInfo, trackRequest } from "../ops/request.js";
import { isPlainGrpcWatch } from "./grpc-watch.js";

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

/** Legacy URLs that get their own `path` label; handler paths do too, anything else is "other". */
const LEGACY_PATHS = new Set(["/baichuan/task_create", "/baichuan/task_get", "/healthz"]);
/** The admin URLs (canghai.ts) share one label. */
const CANGHAI = /^\/canghai\//;

/**
 * A handler name no token pattern can match unless it matches every handler: patterns are made of
 * [A-Za-z0-9_.*-] between slashes, so only all-wildcard patterns (`/*`, `/*\/*`) match `:`.
 */
const EVERY_HANDLER_PROBE = "/:/:";

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
    this.metrics = new Metrics(bc.admin, options.watchStreams, options.log);
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
    trackRequest(req, info);
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
    if (this.options.log.enabled?.("info") === false) return; // the line would be dropped: not made
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
    const info = requestInfo(req);
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
      if (status === 200) status = httpStatusOf(err, 500);
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
