/**
 * One listener for every protocol: gRPC (HTTP/2), Connect (HTTP/1.1 and HTTP/2), gRPC-Web, the
 * legacy JSON URLs and /healthz. Without TLS, Node's HTTP/2 server cannot fall back to HTTP/1.1, so
 * each connection's first bytes are read: the HTTP/2 preface goes to the HTTP/2 server, anything
 * else to the HTTP/1.1 server. Both share one request handler.
 */
import { createServer as createHttp1Server, type IncomingMessage } from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest, type ServerHttp2Session } from "node:http2";
import { type AddressInfo, createServer as createNetServer, isIP, type Socket } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import { createContextValues } from "@connectrpc/connect";
import { AdminService } from "../../gen/baichuan/v1/admin_pb.js";
import { ScheduleService } from "../../gen/baichuan/v1/schedule_pb.js";
import { adminServiceImpl } from "../api/admin-service.js";
import { errorInterceptor } from "../api/errors.js";
import { healthRoutes, ServerHealth } from "../api/health.js";
import { reflectionRoutes } from "../api/reflection.js";
import { scheduleServiceImpl } from "../api/schedule-service.js";
import { kClientIp, kConnection, taskServiceRoutes, WatchStreams } from "../api/task-service.js";
import { Authenticator } from "../core/auth.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { legacyHandler } from "../legacy/bridge.js";
import type { Logger } from "../ops/log.js";
import { kRequest, requestInfo } from "../ops/request.js";
import { createAdapter } from "./adapter.js";
import { withDashboard } from "./dashboard.js";
import { isPlainGrpcWatch, serveGrpcWatch } from "./grpc-watch.js";
import { guardResets } from "./http2-guard.js";
import { Telemetry } from "./telemetry.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Largest request header block (HTTP/1.1 and HTTP/2; gRPC metadata included). */
export const MAX_HEADER_BYTES = 16 * 1024;

// protobuf-es decodes strings with a TextDecoder that drops a leading U+FEFF; keep it, so binary
// and JSON requests carrying the same string are judged the same.
{
  const encoding = getTextEncoding();
  const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
  const strict = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
  configureTextEncoding({ ...encoding, decodeUtf8: (bytes, isStrict) => (isStrict ? strict : lenient).decode(bytes) });
}

/** Limits of the listener; every one configurable (see config.ts). */
/** Handler options of a service whose Connect JSON requests may not carry unknown fields. */
const STRICT_JSON = { jsonOptions: { ignoreUnknownFields: false } };

export interface ServerLimits {
  /** Largest request body (default: params limit + 64 KiB). */
  maxBodyBytes: number;
  /** WatchTask streams open at once on this server (default: 20,000). */
  maxWatchers: number;
  /** WatchTask streams open at once on one connection (default: 1,000). */
  maxWatchersPerConnection: number;
  /** Connections open at once (default: 10,000). */
  maxConnections: number;
  /** Time a new connection or an HTTP/1.1 request may take to send its headers (default: 10,000 ms). */
  headersTimeoutMs: number;
}

export interface ServerOptions {
  host?: string;
  port?: number;
  log: Logger;
  limits?: Partial<ServerLimits>;
  /** Bearer tokens (default: none, every request allowed). */
  auth?: Authenticator;
  /** Serve TLS with this certificate and key (PEM): HTTP/2 by ALPN, HTTP/1.1 still accepted. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Serve GET /metrics without a token even when tokens are configured (default: false). */
  metricsOpen?: boolean;
  /** Serve gRPC reflection without a token even when tokens are configured (default: false). */
  reflectionOpen?: boolean;
  /** Origins whose web pages may call the API (CORS; `*`: any); default: none. */
  corsOrigins?: string[];
}

export interface RunningServer {
  /** The port listened on (useful with port 0). */
  port: number;
  /**
   * Stop accepting connections, end WatchTask streams with UNAVAILABLE, let requests in flight
   * finish within `graceMs` (default: 5,000), then close every connection.
   */
  close(graceMs?: number): Promise<void>;
}

/** The creator's address: a valid X-Real-IP header (set by a proxy) or the peer address. */
export function clientIp(req: IncomingMessage | Http2ServerRequest): string {
  const header = req.headers["x-real-ip"];
  const real = (Array.isArray(header) ? header[0] : header)?.trim();
  if (real && isIP(real)) return real;
  return (req.socket?.remoteAddress ?? "").replace(/^::ffff:/, "");
}

export async function startServer(bc: BaiChuan, options: ServerOptions): Promise<RunningServer> {
  const limits: ServerLimits = {
    maxBodyBytes: bc.limits.maxParamsBytes + 64 * 1024,
    maxWatchers: 20_000,
    maxWatchersPerConnection: 1000,
    maxConnections: 10_000,
    headersTimeoutMs: 10_000,
    ...options.limits,
  };
  const auth = options.auth ?? new Authenticator([]);
  const shutdown = new AbortController();
  const context = { limits, auth, shutdown: shutdown.signal };
  const watchers = new WatchStreams(bc, context);
  // Request ids, the access log, metrics and GET /metrics (metrics.ts).
  const telemetry = new Telemetry(bc, {
    log: options.log,
    auth,
    metricsOpen: options.metricsOpen ?? false,
    watchStreams: () => watchers.openStreams,
    clientIp,
  });
  const health = new ServerHealth(bc, shutdown.signal, limits.maxWatchers);
  const handler = createAdapter({
    routes: (router) => {
      taskServiceRoutes(bc, context, watchers)(router);
      // The operators' services refuse unknown JSON fields (Connect ignores them by default): a
      // misspelt limit must not read as "no limit" when SetQueueLimits replaces every limit.
      router.service(AdminService, adminServiceImpl(bc, auth), STRICT_JSON);
      router.service(ScheduleService, scheduleServiceImpl(bc, auth), STRICT_JSON);
      healthRoutes(health)(router);
      reflectionRoutes(router, { auth, open: options.reflectionOpen ?? false });
    },
    // /metrics: Prometheus (metrics.ts); /ui: the dashboard (static files, no token); anything else
    // that is not an RPC: the JSON bridge.
    fallback: telemetry.serveMetrics(
      withDashboard(legacyHandler(bc, { clientIp, log: options.log, maxBody: limits.maxBodyBytes, auth, health })),
    ),
    // Telemetry outermost: it counts the codes the error interceptor answers.
    interceptors: [telemetry.interceptor, errorInterceptor(options.log)],
    maxBodyBytes: limits.maxBodyBytes,
    // Decode deeper messages than protobuf's default of 100, so too deeply nested params get
    // validate.ts's INVALID_ARGUMENT rather than a decoder error.
    binaryOptions: { recursionLimit: 512 },
    contextValues: (req) => {
      // The listener's record (telemetry.track) has the client's address already.
      const info = requestInfo(req);
      return createContextValues()
        .set(kClientIp, info ? info.ip : clientIp(req))
        .set(kConnection, "stream" in req ? (req.stream.session ?? req.socket) : req.socket)
        .set(kRequest, info);
    },
    corsOrigins: options.corsOrigins ?? [],
    log: options.log,
  });
  // Request headers (gRPC metadata) are bounded by size, as gRPC servers bound them (8-16 KiB), not
  // by count: any number of entries within MAX_HEADER_BYTES. (Node's HTTP/2 default of 128 pairs
  // reset calls with some 120 metadata entries.)
  const http1 = createHttp1Server(
    {
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs / 2),
      maxHeaderSize: MAX_HEADER_BYTES,
    },
    (req, res) => {
      // An answer written before the request body was read whole (bodies are read first, body.ts;
      // this is one still coming after that wait) closes the connection: the rest of that body
      // cannot be told from a next request.
      const writeHead = res.writeHead;
      res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
        if (!req.complete) this.shouldKeepAlive = false;
        return writeHead.apply(this, args);
      } as typeof writeHead;
      handler(req, res);
    },
  );
  // Past the size, a request is refused with 431; within it, no header is dropped for their number.
  http1.maxHeadersCount = 0;
  // Slow clients: headers must arrive in time, and a whole request within 30 s (a streamed
  // response may last as long as it needs).
  http1.headersTimeout = limits.headersTimeoutMs;
  http1.requestTimeout = Math.max(30_000, limits.headersTimeoutMs);
  // An idle keep-alive connection is closed after 65 s, not Node's 5 s: a client that sends its
  // next request on a pooled connection just as the server closes it gets "socket hang up";
  // clients and proxies usually drop idle connections sooner.
  http1.keepAliveTimeout = 65_000;
  // Node checks those timeouts only on servers that listened; this one gets its connections from
  // the listener below, so start the checks by hand (http1.close() stops them).
  http1.emit("listening");
  http1.prependListener("request", telemetry.track);
  const http2 = createHttp2Server(
    {
      settings: { maxConcurrentStreams: limits.maxWatchersPerConnection + 100, maxHeaderListSize: MAX_HEADER_BYTES },
      // HPACK counts 32 bytes per entry on top of its name and value: past the size before the count.
      maxHeaderListPairs: Math.ceil(MAX_HEADER_BYTES / 32) + 8,
    },
    (req, res) => (isPlainGrpcWatch(req) ? void serveGrpcWatch(req, res, watchers, limits.maxBodyBytes) : handler(req, res)),
  );
  http2.prependListener("request", telemetry.track);
  const sockets = new Set<Socket>();
  const sessions = new Set<ServerHttp2Session>();
  http2.on("session", (session) => {
    guardResets(session, options.log);
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  // With TLS, ALPN picks the protocol; without, the first bytes do.
  const listener = options.tls
    ? createTlsServer(
        { ...options.tls, ALPNProtocols: ["h2", "http/1.1"], handshakeTimeout: limits.headersTimeoutMs },
        (socket) => (socket.alpnProtocol === "h2" ? http2 : http1).emit("connection", socket),
      ).on("connection", track)
    : createNetServer((socket) => {
        track(socket);
        // A connection that says nothing is closed; so is one that sends less than a preface in time.
        socket.setTimeout(limits.headersTimeoutMs, () => socket.destroy());
        sniff(socket, (isHttp2) => {
          socket.setTimeout(0);
          (isHttp2 ? http2 : http1).emit("connection", socket);
        });
      });
  listener.on("tlsClientError", (_err, socket) => socket.destroy());
  listener.maxConnections = limits.maxConnections;

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port ?? 8585, options.host ?? "0.0.0.0", () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const port = (listener.address() as AddressInfo).port;

  return {
    port,
    async close(graceMs = 5000) {
      // Stop accepting; end watch streams (UNAVAILABLE: watch again elsewhere); let requests in
      // flight finish; close connections as they fall idle; destroy what is left after the grace.
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      shutdown.abort();
      telemetry.close();
      http1.close(() => {});
      for (const session of sessions) session.close();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        http1.closeIdleConnections();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/**
 * Read until the first bytes tell HTTP/2 (the connection preface) from anything else, then put
 * them back and hand the socket over.
 */
function sniff(socket: Socket, handOver: (isHttp2: boolean) => void): void {
  let seen = Buffer.alloc(0);
  // Paused-mode reads: the HTTP/2 session takes the socket's handle over, and only data put back
  // with unshift() before it does so reaches it (flowing-mode data would be lost).
  const onReadable = () => {
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
      seen = Buffer.concat([seen, chunk]);
    }
    const n = Math.min(seen.length, H2_PREFACE.length);
    if (n === 0) return;
    const matches = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && seen.length < H2_PREFACE.length) return; // not enough yet
    socket.off("readable", onReadable);
    socket.unshift(seen);
    handOver(matches);
  };
  socket.on("readable", onReadable);
  socket.on("error", () => socket.destroy());
}
