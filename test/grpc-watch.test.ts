/**
 * WatchTask's lean gRPC path (src/api/grpc-watch.ts), spoken to with raw HTTP/2 frames: the envelope,
 * trailers, deadlines, cancellation and malformed requests. Requests the lean path does not take
 * (compressed) must still be served, by Connect.
 */
import { type ClientHttp2Session, connect as connectHttp2 } from "node:http2";
import { gunzipSync, gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus, WatchTaskRequestSchema, WatchTaskResponseSchema } from "../gen/baichuan/v1/task_pb.js";
import { envelope } from "./support/grpc.js";
import { eventually, gate, startService, type TestService } from "./support/service.js";

const PATH = "/baichuan.v1.TaskService/WatchTask";
const hold = gate();
let svc: TestService;
let session: ClientHttp2Session;

beforeAll(async () => {
  svc = await startService({
    handlers: { "/test/hold": async () => hold.opened },
    serverLimits: { maxWatchersPerConnection: 3 },
  });
  session = connectHttp2(svc.baseUrl);
});
afterAll(async () => {
  hold.open();
  session?.close();
  await svc?.close();
});

const request = (taskId: string) => envelope(toBinary(WatchTaskRequestSchema, create(WatchTaskRequestSchema, { taskId })));

interface Answer {
  status: number | undefined;
  contentType: string | undefined;
  /** grpc-encoding and grpc-accept-encoding of the response headers. */
  encoding: string | undefined;
  acceptEncoding: string | undefined;
  /** Uncompressed messages; compressed ones as they came; the flags byte of each. */
  messages: Buffer[];
  compressed: Buffer[];
  flags: number[];
  grpcStatus: number | undefined;
  grpcMessage: string | undefined;
}

/** One raw WatchTask call; resolves when the stream ends. */
function call(body: Buffer, headers: Record<string, string> = {}, s = session, path = PATH): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = s.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    const answer: Answer = {
      status: undefined,
      contentType: undefined,
      encoding: undefined,
      acceptEncoding: undefined,
      messages: [],
      compressed: [],
      flags: [],
      grpcStatus: undefined,
      grpcMessage: undefined,
    };
    let data = Buffer.alloc(0);
    const status = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined) answer.grpcStatus = Number(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) answer.grpcMessage = decodeURIComponent(String(h["grpc-message"]));
    };
    stream.on("response", (h) => {
      answer.status = Number(h[":status"]);
      answer.contentType = h["content-type"];
      answer.encoding = h["grpc-encoding"] as string | undefined;
      answer.acceptEncoding = h["grpc-accept-encoding"] as string | undefined;
      status(h);
    });
    stream.on("trailers", status);
    stream.on("data", (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
    });
    stream.on("error", reject);
    stream.on("close", () => {
      for (let at = 0; at + 5 <= data.length; ) {
        const length = data.readUInt32BE(at + 1);
        answer.flags.push(data[at]!);
        if (data[at] === 0) answer.messages.push(data.subarray(at + 5, at + 5 + length));
        else answer.compressed.push(data.subarray(at + 5, at + 5 + length));
        at += 5 + length;
      }
      resolve(answer);
    });
    stream.end(body);
  });
}

const statuses = (a: Answer) => a.messages.map((m) => fromBinary(WatchTaskResponseSchema, m).task!.status);

describe("WatchTask over plain gRPC", () => {
  it("streams every snapshot as a length-prefixed message and ends with grpc-status 0 in the trailers", async () => {
    const { id } = await svc.bc.enqueue("/demo_api/hello", { name: "raw" });
    const answer = await call(request(id));
    expect(answer.status).toBe(200);
    expect(answer.contentType).toMatch(/^application\/grpc/);
    expect(answer.grpcStatus).toBe(0);
    expect(statuses(answer).at(-1)).toBe(TaskStatus.FINISHED);
    const last = fromBinary(WatchTaskResponseSchema, answer.messages.at(-1)!).task!;
    expect(last.id).toBe(id);
    expect(last.result?.kind.case).toBe("structValue");
  });

  it("answers NOT_FOUND with a percent-encoded grpc-message for an unknown task", async () => {
    const answer = await call(request("0000000000000000000A"));
    expect(answer.grpcStatus).toBe(Code.NotFound);
    expect(answer.grpcMessage).toContain("does not exist");
    expect(answer.messages).toHaveLength(0);
  });

  it("ends a stream with DEADLINE_EXCEEDED when its grpc-timeout passes", async () => {
    const { id } = await svc.bc.enqueue("/test/hold", {});
    const answer = await call(request(id), { "grpc-timeout": "300m" });
    expect(answer.grpcStatus).toBe(Code.DeadlineExceeded);
    expect(statuses(answer)[0]).toBeDefined(); // the first snapshot came before the deadline
  });

  /** The same input on both paths: the lean one, and Connect (a query string takes the request there). */
  const table: Array<[name: string, body: () => Buffer, headers: Record<string, string>, code: Code]> = [
    ["no message at all", () => Buffer.alloc(0), {}, Code.Unimplemented],
    ["a truncated envelope", () => request("0000000000000000000A").subarray(0, 8), {}, Code.InvalidArgument],
    ["a truncated envelope header", () => Buffer.from([0, 0, 0]), {}, Code.InvalidArgument],
    [
      "two messages",
      () => Buffer.concat([request("0000000000000000000A"), request("0000000000000000000A")]),
      {},
      Code.Unimplemented,
    ],
    [
      "a message, then a truncated one",
      () => Buffer.concat([request("0000000000000000000A"), Buffer.from([0, 0])]),
      {},
      Code.InvalidArgument,
    ],
    [
      "a compressed flag without grpc-encoding",
      () => envelope(toBinary(WatchTaskRequestSchema, create(WatchTaskRequestSchema, { taskId: "x" })), 1),
      {},
      Code.Internal,
    ],
    ["bytes that are not a WatchTaskRequest", () => envelope(Buffer.from([0xff, 0xff, 0xff, 0xff])), {}, Code.Internal],
    ["an envelope that claims 2 GiB", () => Buffer.from([0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3]), {}, Code.ResourceExhausted],
    ["a body larger than the limit", () => envelope(Buffer.alloc(2 * 1024 * 1024, 0x41)), {}, Code.ResourceExhausted],
    ["an invalid grpc-timeout", () => request("0000000000000000000A"), { "grpc-timeout": "soon" }, Code.InvalidArgument],
    ["a task id that is not one", () => request("../../etc"), {}, Code.InvalidArgument],
    // Not malformed: the flag bits other than compression are ignored; a deadline of 11,000 years is none.
    [
      "a message with flag 0x80",
      () => envelope(toBinary(WatchTaskRequestSchema, create(WatchTaskRequestSchema, { taskId: "0000000000000000000A" })), 0x80),
      {},
      Code.NotFound,
    ],
    [
      "a grpc-timeout too long for a timer",
      () => request("0000000000000000000A"),
      { "grpc-timeout": "99999999H" },
      Code.NotFound,
    ],
  ];

  it.each(table)("answers %s the same on both paths", async (_name, body, headers, code) => {
    const lean = await call(body(), headers);
    const viaConnect = await call(body(), headers, session, `${PATH}?via=connect`);
    expect({ lean: lean.grpcStatus, connect: viaConnect.grpcStatus }).toEqual({ lean: code, connect: code });
    // Both name the compressions the server takes, in the headers.
    expect(lean.acceptEncoding).toBe("gzip,br");
    expect(viaConnect.acceptEncoding).toBe("gzip,br");
  });

  it("compresses big messages when the client takes gzip, as Connect does", async () => {
    const { id } = await svc.bc.enqueue("/demo_api/echo", { text: "x".repeat(4000) });
    await eventually(async () => (await svc.bc.getTask(id)).status === "finished");
    const headers = { "grpc-accept-encoding": "identity,deflate,gzip" }; // what grpc-js sends
    const lean = await call(request(id), headers);
    const viaConnect = await call(request(id), headers, session, `${PATH}?via=connect`);
    for (const answer of [lean, viaConnect]) {
      expect(answer.grpcStatus).toBe(0);
      expect(answer.encoding).toBe("gzip");
      expect(answer.flags).toEqual([1]); // one message, compressed
      expect(fromBinary(WatchTaskResponseSchema, gunzipSync(answer.compressed[0]!)).task!.id).toBe(id);
    }
    // Without grpc-accept-encoding: not compressed, on either path.
    for (const answer of [await call(request(id)), await call(request(id), {}, session, `${PATH}?via=connect`)]) {
      expect(answer.encoding).toBeUndefined();
      expect(answer.flags).toEqual([0]);
    }
  });

  it("frees a stream's place when the client resets it", async () => {
    const own = connectHttp2(svc.baseUrl);
    try {
      const ids = await Promise.all([1, 2, 3, 4].map(() => svc.bc.enqueue("/test/hold", {}).then((r) => r.id)));
      const opened = ids.slice(0, 3).map((id) => {
        const stream = own.request({ ":method": "POST", ":path": PATH, "content-type": "application/grpc", te: "trailers" });
        stream.end(request(id));
        return new Promise<typeof stream>((resolve) => stream.once("data", () => resolve(stream)));
      });
      const streams = await Promise.all(opened);
      // The fourth is over the limit of 3 per connection...
      expect((await call(request(ids[3]!), {}, own)).grpcStatus).toBe(Code.ResourceExhausted);
      // ...until one of the three is reset by the client.
      streams[0]!.close();
      const fourth = await eventually(async () => {
        const answer = await call(request(ids[3]!), { "grpc-timeout": "200m" }, own);
        return answer.grpcStatus === Code.DeadlineExceeded ? answer : undefined;
      });
      expect(statuses(fourth)).toHaveLength(1); // its first snapshot, then the deadline
      for (const s of streams) s.close();
    } finally {
      own.close();
    }
  });

  it("still serves a compressed request, through Connect", async () => {
    const { id } = await svc.bc.enqueue("/demo_api/hello", { name: "gzip" });
    const body = envelope(gzipSync(toBinary(WatchTaskRequestSchema, create(WatchTaskRequestSchema, { taskId: id }))), 1);
    const answer = await call(body, { "grpc-encoding": "gzip" });
    expect(answer.grpcStatus).toBe(0);
    expect(answer.messages.length).toBeGreaterThan(0);
  });
});
