/**
 * One listener for every protocol: gRPC (HTTP/2), Connect (HTTP/1.1 and HTTP/2), gRPC-Web, the
 * legacy JSON URLs and /healthz. Without TLS, Node's HTTP/2 server cannot fall back to HTTP/1.1, so
 * each connection's first bytes are read: the HTTP/2 preface goes to the HTTP/2 server, anything
 * else to the HTTP/1.1 server. Both share one request handler.
 */
import { createServer as createHttp1Server, type IncomingMessage } from "node:http";
import { createServer as createHttp2Server, type Http2ServerRequest } from "node:http2";
import { type AddressInfo, createServer as createNetServer, isIP, type Socket } from "node:net";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { BaiChuan } from "./baichuan.js";
import { legacyHandler } from "./legacy.js";
import type { Logger } from "./log.js";
import { kClientIp, taskServiceRoutes } from "./service.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface ServerOptions {
  host?: string;
  port?: number;
  log: Logger;
}

export interface RunningServer {
  /** The port listened on (useful with port 0). */
  port: number;
  /** Stop accepting connections, end open streams, close the rest. */
  close(): Promise<void>;
}

/** The creator's address: a valid X-Real-IP header (set by a proxy) or the peer address. */
export function clientIp(req: IncomingMessage | Http2ServerRequest): string {
  const header = req.headers["x-real-ip"];
  const real = (Array.isArray(header) ? header[0] : header)?.trim();
  if (real && isIP(real)) return real;
  return (req.socket?.remoteAddress ?? "").replace(/^::ffff:/, "");
}

export async function startServer(bc: BaiChuan, options: ServerOptions): Promise<RunningServer> {
  const handler = connectNodeAdapter({
    routes: taskServiceRoutes(bc),
    fallback: legacyHandler(bc, clientIp, options.log),
    readMaxBytes: bc.maxParamsBytes + 64 * 1024,
    // Decode deeper messages than protobuf's default of 100, so too deeply nested params get
    // validate.ts's INVALID_ARGUMENT rather than a decoder error.
    binaryOptions: { recursionLimit: 512 },
    contextValues: (req) => createContextValues().set(kClientIp, clientIp(req)),
  });
  const http1 = createHttp1Server((req, res) => {
    // An answer written before the request body was read (a refused upload) closes the connection:
    // the rest of that body cannot be told from a next request.
    const writeHead = res.writeHead;
    res.writeHead = function (this: typeof res, ...args: Parameters<typeof writeHead>) {
      if (!req.complete) this.shouldKeepAlive = false;
      return writeHead.apply(this, args);
    } as typeof writeHead;
    handler(req, res);
  });
  const http2 = createHttp2Server({}, handler);
  const sockets = new Set<Socket>();

  const listener = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    sniff(socket, (isHttp2) => (isHttp2 ? http2 : http1).emit("connection", socket));
  });

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
    async close() {
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      http1.closeIdleConnections();
      for (const socket of sockets) socket.end();
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, 2000);
      await closed;
      clearTimeout(timer);
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
