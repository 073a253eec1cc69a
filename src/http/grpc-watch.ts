/**
 * WatchTask over plain gRPC without Connect's stream machinery. An open Connect server stream
 * holds about 45 KB of heap (a chain of async generators per request); this path reads the one
 * request message and writes length-prefixed messages straight onto the HTTP/2 stream, for about
 * a quarter of that. It takes only `application/grpc` / `application/grpc+proto` requests without
 * compression; every other WatchTask request (Connect, gRPC-Web, JSON, compressed) goes through
 * Connect. Admission, limits and the messages themselves come from WatchStreams on both paths,
 * and it answers as Connect would: the same codes for the same malformed input, responses
 * compressed when the client takes it (as Connect negotiates it), the same headers.
 */
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Compression, compressionNegotiate } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { TaskService, WatchTaskRequestSchema, WatchTaskResponseSchema } from "../../gen/baichuan/v1/task_pb.js";
import type { WatchStreams } from "../api/task-service.js";
import { abortedCall, toConnectError } from "../core/errors.js";
import { drain } from "./body.js";
import { envelope, grpcMessage, grpcTimeoutMs, MAX_TIMER_MS } from "./grpc-wire.js";

const PATH = `/${TaskService.typeName}/${TaskService.method.watchTask.name}`;

/** The compressions the server takes, in its order of preference (Connect's adapter's too). */
export const ACCEPT_COMPRESSION: Compression[] = [compressionGzip, compressionBrotli];
/** Messages smaller than this are not compressed (Connect's default compressMinBytes). */
const COMPRESS_MIN_BYTES = 1024;

/** Whether this request can take the lean path. */
export function isPlainGrpcWatch(req: Http2ServerRequest): boolean {
  if (req.method !== "POST" || req.url !== PATH) return false;
  const type = req.headers["content-type"];
  const encoding = req.headers["grpc-encoding"];
  return (
    (type === "application/grpc" || type === "application/grpc+proto") && (encoding === undefined || encoding === "identity")
  );
}

/**
 * Serve one WatchTask stream; never rejects (every failure ends the stream with a gRPC status).
 * `maxBodyBytes`: the largest request accepted (Connect's readMaxBytes on the other path).
 */
export async function serveGrpcWatch(
  req: Http2ServerRequest,
  res: Http2ServerResponse,
  watchers: WatchStreams,
  maxBodyBytes: number,
): Promise<void> {
  const controller = new AbortController();
  const cancel = () => controller.abort(new ConnectError("the client canceled the call", Code.Canceled));
  res.once("close", cancel);
  // As Connect: a response compression the client accepts, named in the headers even when no
  // message turns out big enough to be compressed.
  const compression = compressionNegotiate(
    ACCEPT_COMPRESSION,
    null,
    (req.headers["grpc-accept-encoding"] as string | undefined) ?? null,
    "grpc-accept-encoding",
  ).response;
  const headers = {
    "content-type": "application/grpc+proto",
    "grpc-accept-encoding": ACCEPT_COMPRESSION.map((c) => c.name).join(","),
    ...(compression ? { "grpc-encoding": compression.name } : {}),
  };
  let deadline: NodeJS.Timeout | undefined;
  let error: ConnectError | undefined;
  try {
    const timeoutMs = parseTimeout(req.headers["grpc-timeout"] as string | undefined);
    if (timeoutMs !== undefined) {
      deadline = setTimeout(
        () => controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded)),
        timeoutMs,
      );
    }
    const request = decodeRequest(await readBody(req, maxBodyBytes, controller.signal), maxBodyBytes);
    const connection = req.stream.session ?? req.socket;
    const messages = watchers.watch(request.taskId, req.headers.authorization, connection, controller.signal);
    for await (const message of messages) {
      if (!res.headersSent) res.writeHead(200, headers);
      const bytes = toBinary(WatchTaskResponseSchema, message);
      const frame =
        compression && bytes.length >= COMPRESS_MIN_BYTES ? envelope(1, await compression.compress(bytes)) : envelope(0, bytes);
      // A client that does not read holds the next message back (no unbounded buffering).
      if (!res.write(frame)) await drained(res, controller.signal);
    }
    if (controller.signal.aborted) throw abortedCall(controller.signal);
  } catch (err) {
    error = toConnectError(err);
  } finally {
    clearTimeout(deadline);
    res.off("close", cancel);
  }
  if (res.closed || res.destroyed) return;
  // Headers then trailers, also for an error before any message (a valid gRPC response).
  if (!res.headersSent) res.writeHead(200, headers);
  res.addTrailers(
    error ? { "grpc-status": String(error.code), "grpc-message": grpcMessage(error.rawMessage) } : { "grpc-status": "0" },
  );
  res.end();
}

/** gRPC's `grpc-timeout` in ms; undefined when absent or too long for a timer (no deadline, as on the Connect path). */
function parseTimeout(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const ms = grpcTimeoutMs(header);
  if (ms === undefined) {
    throw new ConnectError(`protocol error: invalid grpc timeout value: ${header.slice(0, 20)}`, Code.InvalidArgument);
  }
  return ms > MAX_TIMER_MS ? undefined : ms;
}

/**
 * The whole request body, at most `limit` bytes (past it, the rest is read and dropped before the
 * answer, as on the Connect path); a client that never ends it is reset on abort.
 */
async function readBody(req: Http2ServerRequest, limit: number, signal: AbortSignal): Promise<Buffer> {
  const onAbort = () => req.destroy();
  signal.addEventListener("abort", onAbort);
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) break;
      chunks.push(chunk);
    }
    if (size > limit) {
      await drain(req);
      throw new ConnectError(`message size is larger than configured readMaxBytes ${limit}`, Code.ResourceExhausted);
    }
    return Buffer.concat(chunks);
  } catch (err) {
    throw signal.aborted ? abortedCall(signal) : err; // the deadline, rather than the read it cut
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Exactly one uncompressed length-prefixed message, judged as Connect judges it: envelope by
 * envelope, so that the same malformed input gets the same code on both paths.
 */
function decodeRequest(body: Buffer, limit: number) {
  let request: ReturnType<typeof parse> | undefined;
  for (let at = 0; at < body.length; ) {
    if (body.length - at < 5) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    const length = body.readUInt32BE(at + 1);
    if (length > limit) {
      throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${limit}`, Code.ResourceExhausted);
    }
    if (body.length - at - 5 < length) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    if (body[at]! & 1) {
      throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
    }
    const message = parse(body.subarray(at + 5, at + 5 + length));
    if (request) {
      throw new ConnectError("protocol error: received extra input message for server-streaming method", Code.Unimplemented);
    }
    request = message;
    at += 5 + length;
  }
  if (!request) throw new ConnectError("protocol error: missing input message for server-streaming method", Code.Unimplemented);
  return request;
}

function parse(bytes: Uint8Array) {
  try {
    return fromBinary(WatchTaskRequestSchema, bytes);
  } catch (err) {
    throw new ConnectError(`parse binary: ${err instanceof Error ? err.message : String(err)}`, Code.Internal);
  }
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
