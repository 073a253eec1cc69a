/**
 * The listener's request handler: Connect's router for the RPC services (as Connect's own Node
 * adapter, connectNodeAdapter, does it), plus what that adapter leaves out:
 *
 * - gRPC-Web's text mode (`application/grpc-web-text`, base64 bodies), the official grpc-web
 *   client's default;
 * - `grpc-accept-encoding` in the response headers of gRPC and gRPC-Web, so a client falls back
 *   from a compression the server does not take;
 * - `grpc-message` percent-encoded as gRPC specifies (bytes outside printable ASCII, and `%`), not
 *   as a URI component (grpc-js would show `%2F` and `%3A`);
 * - a deadline longer than a timer can wait (24.8 days) is no deadline (Connect's timer would
 *   fire at once);
 * - a gRPC, gRPC-Web or Connect request for a method this server does not have is answered
 *   UNIMPLEMENTED in its own protocol (Connect: HTTP 404, code `unimplemented`), not by the JSON
 *   bridge;
 * - a request's body is read before it is answered (what is over the body limit is read and
 *   dropped, up to a bound): an answer sent while the client still sends makes HTTP/2 reset the
 *   stream, and some clients (curl) then lose the answer;
 * - CORS (cors.ts).
 *
 * Everything that is not an RPC goes to `fallback` (metrics, dashboard, legacy JSON bridge) with
 * its body already read.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { Logger } from "../ops/log.js";
import { requestInfo } from "../ops/request.js";
import { bodyOf, closeAfterAnswer, drain, readBody } from "./body.js";
import { applyCors } from "./cors.js";
import { ACCEPT_COMPRESSION } from "./grpc-watch.js";
import {
  envelope,
  grpcMessage,
  grpcTimeoutMs,
  MAX_TIMER_MS,
  type RpcProtocol,
  reencodeGrpcMessage,
  rpcProtocolOf,
  TRAILER_FLAG,
} from "./grpc-wire.js";

type NodeRequest = IncomingMessage | Http2ServerRequest;
type NodeResponse = ServerResponse | Http2ServerResponse;

export interface AdapterOptions extends ConnectRouterOptions {
  routes(router: ConnectRouter): void;
  /** Requests that are not RPCs; their body is read already (`for await` over the request yields it). */
  fallback(req: NodeRequest, res: NodeResponse): void;
  contextValues(req: NodeRequest): ContextValues;
  /** Largest request body kept (the RPCs' readMaxBytes too). */
  maxBodyBytes: number;
  /** Origins allowed to call from a browser (cors.ts); empty: none. */
  corsOrigins: readonly string[];
  log: Logger;
}

export function createAdapter(options: AdapterOptions): (req: NodeRequest, res: NodeResponse) => void {
  const acceptCompression = options.acceptCompression ?? ACCEPT_COMPRESSION;
  const router = createConnectRouter({ ...options, acceptCompression, readMaxBytes: options.maxBodyBytes });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const services = new Set(router.handlers.map((h) => h.service.typeName));
  const acceptEncoding = acceptCompression.map((c) => c.name).join(",");

  async function serveRpc(handler: UniversalHandler, req: NodeRequest, res: NodeResponse, protocol: RpcProtocol | undefined) {
    const uReq = universalRequestFromNodeRequest(req, res, undefined, options.contextValues(req));
    // Connect reads the body from here; if it stops early (a refused request), the rest is
    // drained rather than reset.
    let body: AsyncIterable<Uint8Array> = bodyOf(req, () => void drain(req));
    if (protocol === "grpc-web-text") {
      body = decodeBase64(body);
      uReq.header.set("content-type", "application/grpc-web+proto");
    }
    // (The Node headers tell cheaply whether there is a deadline to look at.)
    if (req.headers["grpc-timeout"] !== undefined || req.headers["connect-timeout-ms"] !== undefined) {
      dropUntimeableDeadline(uReq.header);
    }
    const uRes = await handler({ ...uReq, body });
    // A request of one message is answered once it was read whole (an early answer, a refusal,
    // waits for the client to finish sending).
    if (handler.method.methodKind === "unary" || handler.method.methodKind === "server_streaming") {
      if (!req.readableEnded && !(await drain(req))) closeAfterAnswer(res);
    }
    await universalResponseToNodeResponse(adaptResponse(uRes, protocol, acceptEncoding), res);
  }

  async function serveOther(req: NodeRequest, res: NodeResponse, protocol: RpcProtocol | undefined) {
    const { chunks, whole } = await readBody(req, options.maxBodyBytes + 1);
    if (req.errored) return; // the client went away: nobody to answer
    if (!whole) closeAfterAnswer(res);
    if (protocol) {
      unimplemented(req, res, protocol, services);
      return;
    }
    // The fallback reads the body from memory.
    (req as unknown as { [Symbol.asyncIterator]: () => AsyncIterator<Buffer> })[Symbol.asyncIterator] = async function* () {
      yield* chunks;
    };
    options.fallback(req, res);
  }

  return (req, res) => {
    if (applyCors(req, res, options.corsOrigins)) return;
    const protocol = rpcProtocolOf(req.headers, req.method, req.url);
    const path = (req.url ?? "").split("?", 1)[0]!;
    const handler = paths.get(path);
    const served = handler ? serveRpc(handler, req, res, protocol) : serveOther(req, res, protocol);
    served.catch((err: unknown) => {
      const code = ConnectError.from(err).code;
      if (code !== Code.Aborted && code !== Code.Canceled) options.log.error("request failed", { path, error: err });
      if (!res.headersSent) {
        res.writeHead(500);
        res.end();
      } else if (!res.writableEnded) {
        req.destroy();
      }
    });
  };
}

/**
 * A deadline longer than a timer can wait is no deadline: Node would fire the timer at once.
 * (grpc-timeout allows 8 digits of hours; Connect's connect-timeout-ms 10 digits.)
 */
function dropUntimeableDeadline(header: Headers): void {
  const grpc = header.get("grpc-timeout");
  if (grpc !== null && (grpcTimeoutMs(grpc) ?? 0) > MAX_TIMER_MS) header.delete("grpc-timeout");
  const connect = header.get("connect-timeout-ms");
  if (connect !== null && /^\d{1,10}$/.test(connect) && Number(connect) > MAX_TIMER_MS) header.delete("connect-timeout-ms");
}

/** gRPC and gRPC-Web answers: grpc-accept-encoding in the headers, grpc-message re-encoded, text mode. */
function adaptResponse(
  uRes: UniversalServerResponse,
  protocol: RpcProtocol | undefined,
  acceptEncoding: string,
): UniversalServerResponse {
  if (protocol !== "grpc" && protocol !== "grpc-web" && protocol !== "grpc-web-text") return uRes;
  // A service's answer carries its own Headers (the handler context's): changed in place. Connect's
  // canned answers (415, 405, ...) carry none.
  const header = uRes.header instanceof Headers ? uRes.header : new Headers(uRes.header);
  if (!header.has("grpc-accept-encoding")) header.set("grpc-accept-encoding", acceptEncoding);
  reencodeIn(header);
  if (protocol === "grpc-web-text" && header.get("content-type")?.startsWith("application/grpc-web")) {
    header.set("content-type", "application/grpc-web-text+proto");
  }
  let body = uRes.body as AsyncIterable<Uint8Array> | undefined;
  if (body && protocol === "grpc" && uRes.trailer) {
    // The trailers are complete once the body is, and are read then (connect-node reads them
    // after the last chunk): re-encode them when read, once.
    const trailer = uRes.trailer;
    let reencoded = false;
    return {
      ...uRes,
      header,
      get trailer() {
        if (!reencoded) {
          reencoded = true;
          reencodeIn(trailer);
        }
        return trailer;
      },
    };
  }
  if (body && protocol !== "grpc") {
    body = reencodeTrailerFrame(body);
    if (protocol === "grpc-web-text") body = encodeBase64(body);
  }
  return { ...uRes, header, ...(body ? { body } : {}) };
}

function reencodeIn(headers: Headers): void {
  const message = headers.get("grpc-message");
  if (message !== null) headers.set("grpc-message", reencodeGrpcMessage(message));
}

/** gRPC-Web: the trailer frame (in the body) with its grpc-message re-encoded. */
async function* reencodeTrailerFrame(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending = Buffer.alloc(0);
  for await (const chunk of body) {
    pending = pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([pending, chunk]);
    const out: Buffer[] = [];
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      const length = pending.readUInt32BE(1);
      const frame = pending.subarray(0, 5 + length);
      pending = pending.subarray(5 + length);
      if (!(frame[0]! & TRAILER_FLAG)) {
        out.push(frame);
        continue;
      }
      const text = frame
        .subarray(5)
        .toString("latin1")
        .replace(/^(grpc-message:\s*)(.*)$/im, (_line, name: string, value: string) => name + reencodeGrpcMessage(value.trim()));
      out.push(envelope(frame[0]!, Buffer.from(text, "latin1")));
    }
    if (out.length > 0) yield out.length === 1 ? out[0]! : Buffer.concat(out);
  }
  if (pending.length > 0) yield pending;
}

/** gRPC-Web text: each chunk of the answer in base64 (padded, as the clients decode it). */
async function* encodeBase64(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) yield Buffer.from(Buffer.from(chunk).toString("base64"), "latin1");
}

/**
 * gRPC-Web text: the request body from base64. Clients may pad each chunk, so the text is decoded
 * a padded group at a time.
 */
async function* decodeBase64(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending = "";
  for await (const chunk of body) {
    pending += Buffer.from(chunk).toString("latin1").replace(/\s+/g, "");
    const usable = pending.length - (pending.length % 4);
    let start = 0;
    for (let i = 3; i < usable; i += 4) {
      if (pending[i] === "=") {
        yield Buffer.from(pending.slice(start, i + 1), "base64");
        start = i + 1;
      }
    }
    if (start < usable) yield Buffer.from(pending.slice(start, usable), "base64");
    pending = pending.slice(usable);
  }
  if (pending !== "") throw new ConnectError("protocol error: the grpc-web-text body is not base64", Code.InvalidArgument);
}

/** UNIMPLEMENTED for an RPC this server does not have, in the request's protocol. */
function unimplemented(req: NodeRequest, res: NodeResponse, protocol: RpcProtocol, services: Set<string>): void {
  const path = (req.url ?? "").split("?", 1)[0]!;
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  const message = !m
    ? `no RPC at ${path.slice(0, 200)}`
    : services.has(m[1]!)
      ? `unknown method ${m[2]!.slice(0, 100)} for service ${m[1]}`
      : `unknown service ${m[1]!.slice(0, 200)}`;
  const info = requestInfo(req);
  if (info) {
    info.kind = "rpc";
    info.stat = "UNIMPLEMENTED";
  }
  if (protocol === "connect") {
    const text = JSON.stringify({ code: "unimplemented", message });
    res.writeHead(404, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  // gRPC and gRPC-Web: a trailers-only answer, the status in the headers.
  const type = String(req.headers["content-type"]).split(";", 1)[0]!.trim();
  const headers = {
    "content-type": protocol === "grpc-web-text" ? "application/grpc-web-text+proto" : type,
    "grpc-status": String(Code.Unimplemented),
    "grpc-message": grpcMessage(message),
  };
  if ("stream" in res) {
    // One HEADERS frame that ends the stream: gRPC clients read no status from headers followed
    // by an empty DATA frame, which is what writeHead() and end() would send.
    res.stream.respond({ ...res.getHeaders(), ...headers, ":status": 200 }, { endStream: true });
    return;
  }
  res.writeHead(200, headers);
  res.end();
}
