/**
 * WatchTask over plain gRPC without Connect's stream machinery. An open Connect server stream
 * holds about 45 KB of heap (a chain of async generators per request); this path reads the one
 * request message and writes length-prefixed messages straight onto the HTTP/2 stream, for about
 * a quarter of that. It takes only `application/grpc` / `application/grpc+proto` requests without
 * compression; every other WatchTask request (Connect, gRPC-Web, JSON, compressed) goes through
 * Connect. Admission, limits and the messages themselves come from WatchStreams on both paths.
 */
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { TaskService, WatchTaskRequestSchema, WatchTaskResponseSchema } from "../gen/baichuan/v1/task_pb.js";
import { toConnectError } from "./errors.js";
import type { WatchStreams } from "./service.js";

const PATH = `/${TaskService.typeName}/${TaskService.method.watchTask.name}`;

/** A WatchTaskRequest holds one task id; anything much larger is not one. */
const MAX_REQUEST_BYTES = 4096;

/** Whether this request can take the lean path. */
export function isPlainGrpcWatch(req: Http2ServerRequest): boolean {
  if (req.method !== "POST" || req.url !== PATH) return false;
  const type = req.headers["content-type"];
  const encoding = req.headers["grpc-encoding"];
  return (
    (type === "application/grpc" || type === "application/grpc+proto") && (encoding === undefined || encoding === "identity")
  );
}

/** Serve one WatchTask stream; never rejects (every failure ends the stream with a gRPC status). */
export async function serveGrpcWatch(req: Http2ServerRequest, res: Http2ServerResponse, watchers: WatchStreams): Promise<void> {
  const controller = new AbortController();
  const cancel = () => controller.abort(new ConnectError("the client went away", Code.Canceled));
  res.once("close", cancel);
  let deadline: NodeJS.Timeout | undefined;
  let error: ConnectError | undefined;
  try {
    const timeoutMs = parseTimeout(req.headers["grpc-timeout"] as string | undefined);
    if (timeoutMs !== undefined) {
      deadline = setTimeout(() => controller.abort(new ConnectError("the deadline passed", Code.DeadlineExceeded)), timeoutMs);
    }
    const request = decodeRequest(await readBody(req, controller.signal));
    const connection = req.stream.session ?? req.socket;
    const messages = watchers.watch(request.taskId, req.headers.authorization, connection, controller.signal);
    for await (const message of messages) {
      if (!res.headersSent) res.writeHead(200, { "content-type": "application/grpc+proto" });
      // A client that does not read holds the next message back (no unbounded buffering).
      if (!res.write(frame(toBinary(WatchTaskResponseSchema, message)))) await drained(res, controller.signal);
    }
    if (controller.signal.aborted) throw controller.signal.reason;
  } catch (err) {
    error = toConnectError(err);
  } finally {
    clearTimeout(deadline);
    res.off("close", cancel);
  }
  if (res.closed || res.destroyed) return;
  // Headers then trailers, also for an error before any message (a valid gRPC response).
  if (!res.headersSent) res.writeHead(200, { "content-type": "application/grpc+proto" });
  res.addTrailers(
    error ? { "grpc-status": String(error.code), "grpc-message": percentEncode(error.rawMessage) } : { "grpc-status": "0" },
  );
  res.end();
}

/** gRPC's `grpc-timeout`: up to 8 digits and a unit. Undefined when absent or too long for a timer. */
function parseTimeout(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(header);
  if (!m) throw new ConnectError(`protocol error: invalid grpc-timeout '${header.slice(0, 20)}'`, Code.InvalidArgument);
  const unitMs = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
  const ms = Number(m[1]) * unitMs;
  return ms > 2 ** 31 - 1 ? undefined : ms;
}

/** The whole request body, at most MAX_REQUEST_BYTES; a client that never ends it is reset on abort. */
async function readBody(req: Http2ServerRequest, signal: AbortSignal): Promise<Buffer> {
  const onAbort = () => req.destroy(signal.reason);
  signal.addEventListener("abort", onAbort);
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES) {
        throw new ConnectError(`request larger than ${MAX_REQUEST_BYTES} bytes`, Code.ResourceExhausted);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Exactly one uncompressed length-prefixed message. */
function decodeRequest(body: Buffer) {
  if (body.length < 5) throw new ConnectError("protocol error: missing request message", Code.InvalidArgument);
  if (body[0] !== 0) {
    throw new ConnectError("protocol error: compressed message without grpc-encoding", Code.InvalidArgument);
  }
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) {
    throw new ConnectError("protocol error: WatchTask takes exactly one request message", Code.InvalidArgument);
  }
  try {
    return fromBinary(WatchTaskRequestSchema, body.subarray(5));
  } catch {
    throw new ConnectError("protocol error: the request message does not decode as a WatchTaskRequest", Code.InvalidArgument);
  }
}

function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** grpc-message: UTF-8, with bytes outside printable ASCII (and '%') percent-encoded. */
function percentEncode(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Resolves when the response can take more, or the stream is aborted. */
function drained(res: Http2ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    signal.addEventListener("abort", done);
  });
}
