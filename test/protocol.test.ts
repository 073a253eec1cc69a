/**
 * The listener's protocol details, spoken to with raw HTTP/1.1 and HTTP/2 requests and with curl:
 * UNIMPLEMENTED for unknown methods in each RPC protocol, grpc-accept-encoding in the response
 * headers, grpc-message encoded as gRPC specifies, gRPC-Web's text mode, CORS, metadata limits,
 * and bodies read before the answer (curl over HTTP/2 then gets every answer).
 */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { type ClientHttp2Session, connect as connectHttp2 } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetTaskRequestSchema, GetTaskResponseSchema, TaskStatus, WatchTaskResponseSchema } from "../gen/baichuan/v1/task_pb.js";
import { createLogger } from "../src/ops/log.js";
import { envelope } from "./support/grpc.js";
import { eventually, failureOf, PROTOCOLS, startService, type TestService } from "./support/service.js";

const exec = promisify(execFile);
const ORIGIN = "https://app.example";
const TOKEN = "protocol-test-token-0123456789";
let svc: TestService;
let secured: TestService;
let session: ClientHttp2Session;

const errorLines: string[] = [];

beforeAll(async () => {
  svc = await startService({
    corsOrigins: [ORIGIN],
    logger: createLogger("error", {}, (line) => void errorLines.push(line)),
  });
  secured = await startService({ redis: svc.redis, authTokens: [TOKEN], worker: false });
  session = connectHttp2(svc.baseUrl);
});
afterAll(async () => {
  session?.close();
  await secured?.close();
  await svc?.close();
});

interface Answer {
  status: number;
  /** HTTP/2: the response's HEADERS frame ended the stream (a trailers-only gRPC answer). */
  endedWithHeaders?: boolean;
  headers: Record<string, string | string[] | undefined>;
  trailers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One request over HTTP/2 (prior knowledge). */
function h2(path: string, headers: Record<string, string>, body: Buffer | string = Buffer.alloc(0)): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":method": "POST", ":path": path, ...headers });
    const answer: Answer = { status: 0, headers: {}, trailers: {}, body: Buffer.alloc(0) };
    stream.on("response", (h, flags) => {
      answer.status = Number(h[":status"]);
      answer.headers = h;
      answer.endedWithHeaders = (flags & 1) === 1; // END_STREAM
    });
    stream.on("trailers", (t) => {
      answer.trailers = t;
    });
    stream.on("data", (chunk: Buffer) => {
      answer.body = Buffer.concat([answer.body, chunk]);
    });
    stream.on("error", reject);
    stream.on("close", () => resolve(answer));
    stream.end(body);
  });
}

/** One request over HTTP/1.1. */
async function h1(path: string, headers: Record<string, string>, body?: Buffer | string, method = "POST"): Promise<Answer> {
  const res = await fetch(svc.baseUrl + path, { method, headers, ...(body !== undefined ? { body } : {}) });
  return {
    status: res.status,
    headers: Object.fromEntries(res.headers),
    trailers: {},
    body: Buffer.from(await res.arrayBuffer()),
  };
}

/** The envelopes of a gRPC-Web body: messages, and the trailer frame's fields. */
function grpcWebFrames(body: Buffer): { messages: Buffer[]; trailer: Record<string, string> } {
  const messages: Buffer[] = [];
  const trailer: Record<string, string> = {};
  for (let at = 0; at + 5 <= body.length; ) {
    const length = body.readUInt32BE(at + 1);
    const data = body.subarray(at + 5, at + 5 + length);
    if (body[at]! & 0x80) {
      for (const line of data.toString("latin1").split("\r\n")) {
        const i = line.indexOf(":");
        if (i > 0) trailer[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
    } else messages.push(data);
    at += 5 + length;
  }
  return { messages, trailer };
}

const getTask = (taskId: string) => envelope(toBinary(GetTaskRequestSchema, create(GetTaskRequestSchema, { taskId })));

describe("a method or service the server does not have", () => {
  const paths = ["/baichuan.v1.TaskService/NoSuch", "/no.such.Service/Method"];

  it.each(paths)("gRPC: UNIMPLEMENTED, trailers-only (%s)", async (path) => {
    const answer = await h2(path, { "content-type": "application/grpc", te: "trailers" }, envelope(new Uint8Array()));
    expect(answer.status).toBe(200);
    expect(answer.headers["grpc-status"]).toBe(String(Code.Unimplemented));
    expect(answer.endedWithHeaders).toBe(true); // grpc-js and grpcio read no status otherwise
    expect(answer.headers["grpc-message"]).toMatch(
      /^unknown (method NoSuch for service baichuan\.v1\.TaskService|service no\.such\.Service)$/,
    );
  });

  it.each(paths)("gRPC-Web over HTTP/1.1 and text mode: UNIMPLEMENTED (%s)", async (path) => {
    for (const type of ["application/grpc-web+proto", "application/grpc-web-text"]) {
      const answer = await h1(path, { "content-type": type, "x-grpc-web": "1" }, "AAAAAAA=");
      expect(answer.status).toBe(200);
      expect(answer.headers["grpc-status"]).toBe(String(Code.Unimplemented));
    }
  });

  it.each(paths)("Connect (unary JSON and proto, streaming): HTTP 404 with code unimplemented (%s)", async (path) => {
    for (const headers of [
      { "content-type": "application/json", "connect-protocol-version": "1" },
      { "content-type": "application/proto" },
      { "content-type": "application/connect+json" },
    ]) {
      const answer = await h1(path, headers, "{}");
      expect(answer.status).toBe(404);
      expect(JSON.parse(answer.body.toString()).code).toBe("unimplemented");
    }
  });

  it("a legacy JSON request to an unknown path still gets the legacy answer", async () => {
    const answer = await h1("/no_such/api", { "content-type": "application/json" }, "{}");
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body.toString()).stat).toBe("ERR_NOT_FOUND");
  });
});

describe("gRPC and gRPC-Web answers", () => {
  it("name the compressions the server takes in their headers (grpc-accept-encoding), not only in trailers", async () => {
    const grpc = await h2(
      "/baichuan.v1.TaskService/GetTask",
      { "content-type": "application/grpc", te: "trailers" },
      getTask("0000000000000000000A"),
    );
    expect(grpc.headers["grpc-accept-encoding"]).toBe("gzip,br");
    const web = await h1(
      "/baichuan.v1.TaskService/GetTask",
      { "content-type": "application/grpc-web+proto" },
      getTask("0000000000000000000A"),
    );
    expect(web.headers["grpc-accept-encoding"]).toBe("gzip,br");
  });

  it("percent-encode grpc-message as gRPC does: only bytes outside printable ASCII, and '%'", async () => {
    // The INVALID_ARGUMENT message names the handler: slashes, a colon, spaces, quotes, non-ASCII.
    const create = (handler: string) =>
      envelope(Buffer.concat([Buffer.from([0x0a, Buffer.byteLength(handler)]), Buffer.from(handler)]));
    const handler = "/nope_é/x";
    const grpc = await h2(
      "/baichuan.v1.TaskService/CreateTask",
      { "content-type": "application/grpc", te: "trailers" },
      create(handler),
    );
    const web = await h1(
      "/baichuan.v1.TaskService/CreateTask",
      { "content-type": "application/grpc-web+proto" },
      create(handler),
    );
    const messages = [String(grpc.trailers["grpc-message"]), grpcWebFrames(web.body).trailer["grpc-message"]!];
    for (const message of messages) {
      expect(message).toContain('handler: "/nope_%C3%A9/x" is not a handler path');
      expect(message).not.toMatch(/%2F|%3A|%20/);
      expect(decodeURIComponent(message)).toContain(handler);
    }
  });
});

describe("gRPC-Web text mode (application/grpc-web-text)", () => {
  it("takes a base64 request and answers in base64, trailer frame included", async () => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/ping" });
    const answer = await h1(
      "/baichuan.v1.TaskService/GetTask",
      { "content-type": "application/grpc-web-text", accept: "application/grpc-web-text", "x-grpc-web": "1" },
      getTask(taskId).toString("base64"),
    );
    expect(answer.status).toBe(200);
    expect(answer.headers["content-type"]).toBe("application/grpc-web-text+proto");
    // Each chunk is padded base64 of its own; decode group by group as clients do.
    const text = answer.body.toString("latin1");
    const bytes = Buffer.concat((text.match(/[^=]*=*/g) ?? []).filter((s) => s !== "").map((s) => Buffer.from(s, "base64")));
    const { messages, trailer } = grpcWebFrames(bytes);
    expect(trailer["grpc-status"]).toBe("0");
    expect(fromBinary(GetTaskResponseSchema, messages[0]!).task!.id).toBe(taskId);
  });

  it("answers a body that is not base64 with INVALID_ARGUMENT", async () => {
    const answer = await h1("/baichuan.v1.TaskService/GetTask", { "content-type": "application/grpc-web-text" }, "AAAAA");
    const bytes = Buffer.from(answer.body.toString("latin1"), "base64");
    expect(grpcWebFrames(bytes).trailer["grpc-status"]).toBe(String(Code.InvalidArgument));
  });

  it("streams WatchTask to the end", async () => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/ping" });
    const request = envelope(Buffer.concat([Buffer.from([0x0a, taskId.length]), Buffer.from(taskId)]));
    const answer = await h1(
      "/baichuan.v1.TaskService/WatchTask",
      { "content-type": "application/grpc-web-text" },
      request.toString("base64"),
    );
    const text = answer.body.toString("latin1");
    const bytes = Buffer.concat((text.match(/[^=]*=*/g) ?? []).filter((s) => s !== "").map((s) => Buffer.from(s, "base64")));
    const { messages, trailer } = grpcWebFrames(bytes);
    expect(trailer["grpc-status"]).toBe("0");
    expect(fromBinary(WatchTaskResponseSchema, messages.at(-1)!).task!.status).toBe(TaskStatus.FINISHED);
  });
});

describe("CORS (BAICHUAN_CORS_ORIGINS)", () => {
  it("answers a preflight of an allowed origin with the methods and headers Connect and gRPC-Web need", async () => {
    const answer = await h1(
      "/baichuan.v1.TaskService/GetTask",
      { origin: ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "content-type,x-grpc-web" },
      undefined,
      "OPTIONS",
    );
    expect(answer.status).toBe(204);
    expect(answer.headers["access-control-allow-origin"]).toBe(ORIGIN);
    expect(answer.headers["access-control-allow-methods"]).toContain("POST");
    for (const header of [
      "content-type",
      "connect-protocol-version",
      "connect-timeout-ms",
      "x-grpc-web",
      "grpc-timeout",
      "authorization",
    ]) {
      expect(String(answer.headers["access-control-allow-headers"]).toLowerCase()).toContain(header);
    }
  });

  it("lets an allowed origin read the answer and its gRPC headers", async () => {
    const answer = await h1(
      "/baichuan.v1.TaskService/GetTask",
      { origin: ORIGIN, "content-type": "application/grpc-web+proto" },
      getTask("0000000000000000000A"),
    );
    expect(answer.headers["access-control-allow-origin"]).toBe(ORIGIN);
    for (const header of ["grpc-status", "grpc-message", "x-request-id"]) {
      expect(String(answer.headers["access-control-expose-headers"]).toLowerCase()).toContain(header);
    }
  });

  it("refuses a preflight of another origin, and gives it no CORS headers", async () => {
    const preflight = await h1(
      "/baichuan.v1.TaskService/GetTask",
      { origin: "https://evil.example", "access-control-request-method": "POST" },
      undefined,
      "OPTIONS",
    );
    expect(preflight.status).toBe(403);
    expect(preflight.headers["access-control-allow-origin"]).toBeUndefined();
    const answer = await h1("/healthz", { origin: "https://evil.example" }, undefined, "GET");
    expect(answer.status).toBe(200);
    expect(answer.headers["access-control-allow-origin"]).toBeUndefined();
  });

  it("is off by default", async () => {
    const res = await fetch(`${secured.baseUrl}/healthz`, { headers: { origin: ORIGIN } });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("metadata (request headers)", () => {
  const metadata = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`x-meta-${i}`, `value-${i}`]));

  it.each(PROTOCOLS)("300 entries are taken over %s (bounded by size, 16 KiB, not by count)", async (protocol) => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/ping" });
    const { task } = await svc.clients[protocol].getTask({ taskId }, { headers: metadata });
    expect(task?.id).toBe(taskId);
  });

  it.each(PROTOCOLS)("more than 16 KiB is refused with an error over %s, and the server serves on", async (protocol) => {
    const [code] = await failureOf(
      svc.clients[protocol].getTask({ taskId: "0000000000000000000A" }, { headers: { "x-big": "x".repeat(20_000) } }),
    );
    expect(code).toBeDefined();
    expect(code).not.toBe(Code.NotFound); // refused before the call ran
    const { taskId } = await svc.clients[protocol].createTask({ handler: "/demo_api/ping" });
    expect(taskId).toMatch(/^[0-9A-F]{20}$/);
  });
});

describe("a request's body is read before it is answered", () => {
  const dir = tmpdir();
  const small = join(dir, "baichuan-small-body.json");
  const big = join(dir, "baichuan-3mb-body.json");
  beforeAll(() => {
    writeFileSync(small, '{"x":1}');
    writeFileSync(big, Buffer.alloc(3 * 1024 * 1024, 0x20));
  });

  /** curl's exit code and the status it saw, for `count` calls. */
  async function curl(args: string[], count: number): Promise<string[]> {
    const outcomes: string[] = [];
    for (let i = 0; i < count; i++) {
      try {
        const { stdout } = await exec("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", ...args], { timeout: 30_000 });
        outcomes.push(`ok ${stdout}`);
      } catch (err) {
        outcomes.push(`exit ${(err as { code?: number }).code}`);
      }
    }
    return outcomes;
  }

  it("curl over HTTP/2 gets every answer to an unknown path, a missing token and an RPC refused at once", async () => {
    const h2c = ["--http2-prior-knowledge", "-X", "POST", "--data-binary"];
    expect(await curl([...h2c, `@${small}`, `${svc.baseUrl}/no_such/path`], 20)).toEqual(Array(20).fill("ok 400"));
    expect(await curl([...h2c, `@${small}`, `${secured.baseUrl}/baichuan/task_create`], 20)).toEqual(Array(20).fill("ok 401"));
    // Connect refuses a content type it does not take before reading the body.
    expect(
      await curl(
        [...h2c, `@${small}`, "-H", "content-type: application/xml", `${svc.baseUrl}/baichuan.v1.TaskService/GetTask`],
        10,
      ),
    ).toEqual(Array(10).fill("ok 415"));
  });

  it("a client that goes away in the middle of its body is no error of the server's", async () => {
    const { connect } = await import("node:net");
    const socket = connect(svc.server.port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write('POST /baichuan/task_create HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"handler":');
    const stream = session.request({ ":method": "POST", ":path": "/baichuan/task_create" });
    stream.write('{"handler":');
    await eventually(async () => (await fetch(`${svc.baseUrl}/healthz`)).ok);
    socket.destroy();
    stream.close(8); // CANCEL
    await eventually(async () => (await fetch(`${svc.baseUrl}/healthz`)).ok);
    expect(errorLines).toEqual([]);
  });

  it.each(["--http2-prior-knowledge", "--http1.1"])(
    "an oversize upload gets its answer, not a reset (curl %s)",
    async (version) => {
      const args = [version, "-X", "POST", "--data-binary", `@${big}`];
      expect(await curl([...args, `${svc.baseUrl}/baichuan/task_create`], 5)).toEqual(Array(5).fill("ok 200"));
      // Connect's unary JSON over the limit: resource_exhausted (HTTP 429).
      expect(
        await curl([...args, "-H", "content-type: application/json", `${svc.baseUrl}/baichuan.v1.TaskService/CreateTask`], 5),
      ).toEqual(Array(5).fill("ok 429"));
    },
  );
});
