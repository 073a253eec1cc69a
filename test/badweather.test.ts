/**
 * Hostile and malformed input to every entry point: the RPC API in all four protocols (typed
 * clients, plus raw Connect JSON / gRPC / gRPC-Web bodies), the legacy URLs, and synchronous
 * handler calls. Each must get a clear error and change nothing in Redis: a full snapshot of every
 * key (type and content) is taken before and after each call and compared.
 */
import { randomBytes } from "node:crypto";
import http from "node:http";
import { connect as http2Connect } from "node:http2";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { MAX_PARAMS_DEPTH } from "../src/core/validate.js";
import { envelope } from "./support/grpc.js";
import { codeOf, eventually, PROTOCOLS, type Protocol, startService, type TestService } from "./support/service.js";

let svc: TestService;

beforeAll(async () => {
  // A heartbeat far in the future keeps the worker's hash still, so snapshots can compare contents.
  svc = await startService({ worker: { heartbeatMs: 3_600_000 } });
});
afterAll(async () => {
  await svc?.close();
});

// ---------------------------------------------------------------------------------------------
// Redis snapshots

/** Every key with its type and content, plus DBSIZE. */
async function snapshot(): Promise<string[]> {
  const c = svc.redis.client;
  const keys = (await c.keys("*")).sort();
  const out = [`dbsize ${await c.dbsize()}`];
  for (const key of keys) {
    const type = await c.type(key);
    let value: unknown;
    if (type === "string") value = await c.get(key);
    else if (type === "hash") value = Object.entries(await c.hgetall(key)).sort();
    else if (type === "list") value = await c.lrange(key, 0, -1);
    else if (type === "set") value = (await c.smembers(key)).sort();
    else if (type === "zset") value = await c.zrange(key, 0, -1, "WITHSCORES");
    out.push(`${key} ${type} ${JSON.stringify(value)}`);
  }
  return out;
}

/** Run `fn` and assert Redis is exactly as before. */
async function unchanged<T>(fn: () => Promise<T>): Promise<T> {
  const before = await snapshot();
  const result = await fn();
  expect(await snapshot()).toEqual(before);
  return result;
}

it("the snapshot sees the worker's keys (so an empty snapshot cannot pass by accident)", async () => {
  const snap = await snapshot();
  expect(snap.some((l) => l.startsWith("mq:workers set"))).toBe(true);
  expect(snap.some((l) => l.startsWith("mq:queues set"))).toBe(true);
  expect(snap.some((l) => l.startsWith("mq:worker:"))).toBe(true);
});

// ---------------------------------------------------------------------------------------------
// Hostile values shared by the RPC and legacy tables

const BAD_HANDLERS: Array<[string, string]> = [
  ["empty", ""],
  ["no leading slash", "demo_api/ping"],
  ["one segment", "/demo_api"],
  ["three segments", "/a/b/c"],
  ["trailing slash", "/demo_api/ping/"],
  ["empty segment", "/demo_api//ping"],
  ["only slashes", "//"],
  ["trailing space", "/demo_api/ping "],
  ["leading space", " /demo_api/ping"],
  ["inner space", "/demo_api/pi ng"],
  ["braces in module", "/{x}/y"],
  ["braces in function", "/a/{b}"],
  ["trailing newline", "/a/b\n"],
  ["NUL byte", "/a/\u0000b"],
  ["500-character segment", `/a/${"x".repeat(500)}`],
  ["unicode", "/百川/ping"],
  ["path traversal", "../../etc/passwd"],
  ["dot segments", "/../.."],
  ["redis glob", "/demo_api/*"],
  ["key-like", "mq:queue:{ABCD}/demo_api/ping"],
];

/** Well-formed names that no process has. */
const UNKNOWN_HANDLERS = ["/demo_api/nope", "/nope/ping", "/Demo_api/ping"];

const BAD_IDS: Array<[string, string]> = [
  ["empty", ""],
  ["too long (64 hex)", "A".repeat(64)],
  ["one short", "0000000000000000FFF"],
  ["one long", "0000000000000000FFFFF"],
  ["non-hex letter", "0000000000000000FFFG"],
  ["path", "../x"],
  ["redis glob on a key", "mq:msg:*"],
  ["glob", "ABCD*"],
  ["20 glob characters", "*".repeat(20)],
  ["unicode", "百川百川百川百川百川百川百川百川百川百川"],
  ["inner space", "0000000000 000000FFF"],
  ["leading space", " 0000000000000000FFFF"],
  ["trailing newline", "0000000000000000FFFF\n"],
  ["NUL", "0000000000000000FFF\u0000"],
];

const SECOND = 1000;
const DAY = 86_400 * SECOND;
const YEAR = 365 * DAY;

/** Out-of-range options, in milliseconds (RPC Durations); the legacy table uses seconds. */
const BAD_OPTION_VALUES_MS: Array<[string, number]> = [
  ["negative", -1 * SECOND],
  ["zero", 0],
  ["over one year", YEAR + SECOND],
  ["10 years", 10 * YEAR],
];
const OPTION_FIELDS = [
  ["timeout", "timeout"],
  ["resultTtl", "result_ttl"],
  ["failureTtl", "failure_ttl"],
  ["ttl", "ttl"],
] as const;

/** Params nested `depth` levels deep. */
function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: true };
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

/** Bytes that are never valid JSON nor a valid protobuf message (a field-0, wire-type-7 tag first). */
function garbage(n = 256): Buffer {
  return Buffer.concat([Buffer.from([0x07, 0xff, 0xfe]), randomBytes(n)]);
}

// ---------------------------------------------------------------------------------------------
// RPC with the typed clients, every protocol

/**
 * A client with connections of its own (HTTP/1.1: one keep-alive socket), so that a call which
 * spoils its connection cannot disturb the shared clients.
 */
function freshClient(protocol: Protocol) {
  const baseUrl = svc.baseUrl;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const transport = {
    grpc: () => createGrpcTransport({ baseUrl }),
    "connect-h2": () => createConnectTransport({ baseUrl, httpVersion: "2" }),
    "connect-h1": () => createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
    "grpc-web": () => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
  }[protocol]();
  return { client: createClient(TaskService, transport), close: () => agent.destroy() };
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) void _;
}

describe.each(PROTOCOLS)("RPC over %s", (protocol) => {
  const client = () => svc.clients[protocol];

  it("CreateTask without a handler: INVALID_ARGUMENT", async () => {
    expect(await unchanged(() => codeOf(client().createTask({})))).toBe(Code.InvalidArgument);
  });

  it.each(BAD_HANDLERS)("CreateTask, handler %s: INVALID_ARGUMENT", async (_, handler) => {
    expect(await unchanged(() => codeOf(client().createTask({ handler, params: {} })))).toBe(Code.InvalidArgument);
  });

  it.each(UNKNOWN_HANDLERS)("CreateTask, unknown handler %s: NOT_FOUND", async (handler) => {
    expect(await unchanged(() => codeOf(client().createTask({ handler })))).toBe(Code.NotFound);
  });

  it.each(BAD_IDS)("GetTask and WatchTask, task id %s: INVALID_ARGUMENT", async (_, taskId) => {
    await unchanged(async () => {
      expect(await codeOf(client().getTask({ taskId }))).toBe(Code.InvalidArgument);
      expect(await codeOf(drain(client().watchTask({ taskId })))).toBe(Code.InvalidArgument);
    });
  });

  it("GetTask and WatchTask, well-formed unknown id: NOT_FOUND", async () => {
    await unchanged(async () => {
      expect(await codeOf(client().getTask({ taskId: "0000000000000000ffff" }))).toBe(Code.NotFound);
      expect(await codeOf(drain(client().watchTask({ taskId: "0000000000000000FFFF" })))).toBe(Code.NotFound);
    });
  });

  describe.each(OPTION_FIELDS)("option %s", (field) => {
    it.each(BAD_OPTION_VALUES_MS)("%s: INVALID_ARGUMENT", async (_, ms) => {
      const options = { [field]: durationFromMs(ms) };
      expect(await unchanged(() => codeOf(client().createTask({ handler: "/demo_api/ping", options })))).toBe(
        Code.InvalidArgument,
      );
    });
  });

  it("timeout of 8 days (over the 7-day limit): INVALID_ARGUMENT", async () => {
    const options = { timeout: durationFromMs(8 * DAY) };
    expect(await unchanged(() => codeOf(client().createTask({ handler: "/demo_api/ping", options })))).toBe(Code.InvalidArgument);
  });

  it("params of 1.1 MB (over the 1 MiB default, under the transport's read limit): INVALID_ARGUMENT", async () => {
    const params = { blob: "x".repeat(1_100_000) };
    expect(await unchanged(() => codeOf(client().createTask({ handler: "/demo_api/echo", params })))).toBe(Code.InvalidArgument);
  });

  it("params of 2 MB (over the transport's read limit): RESOURCE_EXHAUSTED", async () => {
    // A client of its own: over HTTP/1.1 a refused upload spoils its keep-alive connection (see below).
    const fresh = freshClient(protocol);
    try {
      const params = { blob: "x".repeat(2_000_000) };
      expect(await unchanged(() => codeOf(fresh.client.createTask({ handler: "/demo_api/echo", params })))).toBe(
        Code.ResourceExhausted,
      );
    } finally {
      fresh.close();
    }
  });

  it("after a refused 2 MB call, the same connection serves the next call", async () => {
    const fresh = freshClient(protocol);
    try {
      const params = { blob: "x".repeat(2_000_000) };
      expect(await codeOf(fresh.client.createTask({ handler: "/demo_api/echo", params }))).toBe(Code.ResourceExhausted);
      // Any answer but a timeout or a reset will do; NOT_FOUND is what an unknown id gets.
      expect(await codeOf(fresh.client.getTask({ taskId: "0000000000000000FFFF" }, { timeoutMs: 60_000 }))).toBe(Code.NotFound);
    } finally {
      fresh.close();
    }
  });

  it(`params nested ${MAX_PARAMS_DEPTH + 1} levels (one over the limit): INVALID_ARGUMENT`, async () => {
    const params = nested(MAX_PARAMS_DEPTH + 1) as never;
    expect(await unchanged(() => codeOf(client().createTask({ handler: "/demo_api/echo", params })))).toBe(Code.InvalidArgument);
  });

  it("params nested 200 levels deep: INVALID_ARGUMENT", async () => {
    const params = nested(200) as never;
    expect(await unchanged(() => codeOf(client().createTask({ handler: "/demo_api/echo", params })))).toBe(Code.InvalidArgument);
  });
});

// ---------------------------------------------------------------------------------------------
// RPC with raw bodies: what a typed client cannot send

const CREATE_PATH = "/baichuan.v1.TaskService/CreateTask";
const GET_PATH = "/baichuan.v1.TaskService/GetTask";

async function rawPost(path: string, body: string | Buffer, contentType: string, headers: Record<string, string> = {}) {
  const res = await fetch(svc.baseUrl + path, { method: "POST", headers: { "content-type": contentType, ...headers }, body });
  const buf = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body: buf };
}

describe("Connect JSON with malformed bodies", () => {
  const cases: Array<[string, string | Buffer]> = [
    ["not JSON", "handler=/demo_api/ping"],
    ["truncated JSON", '{"handler": "/demo_api/ping"'],
    ["a JSON array", '["/demo_api/ping"]'],
    ["a JSON string", '"/demo_api/ping"'],
    ["a JSON number", "5"],
    ["random bytes", garbage()],
    ["params an array", '{"handler": "/demo_api/ping", "params": [1, 2]}'],
    ["params a string", '{"handler": "/demo_api/ping", "params": "x"}'],
    ["params a number", '{"handler": "/demo_api/ping", "params": 5}'],
    ["handler a number", '{"handler": 5}'],
    ["handler an object", '{"handler": {"path": "/demo_api/ping"}}'],
    ["unique an object", '{"handler": "/demo_api/ping", "options": {"unique": {"a": 1}}}'],
    ["unique a string", '{"handler": "/demo_api/ping", "options": {"unique": "maybe"}}'],
    ["timeout NaN-ish", '{"handler": "/demo_api/ping", "options": {"timeout": "NaNs"}}'],
    ["timeout without unit", '{"handler": "/demo_api/ping", "options": {"timeout": "10"}}'],
    ["timeout a number", '{"handler": "/demo_api/ping", "options": {"timeout": 10}}'],
    ["timeout negative", '{"handler": "/demo_api/ping", "options": {"timeout": "-5s"}}'],
    ["result_ttl zero", '{"handler": "/demo_api/ping", "options": {"resultTtl": "0s"}}'],
    ["ttl over a year", `{"handler": "/demo_api/ping", "options": {"ttl": "${366 * 86400}s"}}`],
    ["1.1 MB params", JSON.stringify({ handler: "/demo_api/echo", params: { blob: "x".repeat(1_100_000) } })],
    ["params nested 200 deep", JSON.stringify({ handler: "/demo_api/echo", params: nested(200) })],
  ];
  it.each(cases)("CreateTask, %s: HTTP 400 invalid_argument", async (_, body) => {
    const { status, body: answer } = await unchanged(() => rawPost(CREATE_PATH, body, "application/json"));
    expect(status).toBe(400);
    const json = JSON.parse(answer.toString("utf8"));
    expect(json.code).toBe("invalid_argument");
    expect(typeof json.message).toBe("string");
  });

  it.each([
    ["not JSON", "task_id=x"],
    ["task id a number", '{"taskId": 5}'],
    ["task id malformed", '{"taskId": "mq:msg:*"}'],
  ])("GetTask, %s: HTTP 400 invalid_argument", async (_, body) => {
    const { status, body: answer } = await unchanged(() => rawPost(GET_PATH, body, "application/json"));
    expect(status).toBe(400);
    expect(JSON.parse(answer.toString("utf8")).code).toBe("invalid_argument");
  });

  it.each([
    ["text/plain", '{"handler": "/demo_api/ping"}'],
    ["application/x-www-form-urlencoded", '{"handler": "/demo_api/ping"}'],
    ["application/xml", "<handler>/demo_api/ping</handler>"],
  ])("CreateTask with content-type %s: HTTP 415, nothing created", async (contentType, body) => {
    const { status } = await unchanged(() => rawPost(CREATE_PATH, body, contentType));
    expect(status).toBe(415);
  });

  it("an unknown RPC method: not OK, nothing created", async () => {
    const { status } = await unchanged(() => rawPost("/baichuan.v1.TaskService/DeleteEverything", "{}", "application/json"));
    expect(status).toBeGreaterThanOrEqual(400);
  });
});

/** A gRPC / gRPC-Web length-prefixed frame around `payload`. */
/**
 * connect-es answers an undecodable binary message with INTERNAL ("parse binary: ...", hard-coded
 * in its createBinarySerialization; grpc-go does the same), before any BaiChuan code runs. JSON
 * bodies get INVALID_ARGUMENT (above). What matters here: a clear error, and nothing stored.
 */
describe("gRPC and gRPC-Web with a garbage message", () => {
  it("gRPC (HTTP/2): an error naming the parse failure, nothing created", async () => {
    const { grpcStatus, grpcMessage } = await unchanged(
      () =>
        new Promise<{ grpcStatus?: string; grpcMessage?: string }>((resolve, reject) => {
          const session = http2Connect(svc.baseUrl);
          session.on("error", reject);
          const req = session.request({
            ":method": "POST",
            ":path": CREATE_PATH,
            "content-type": "application/grpc+proto",
            te: "trailers",
          });
          const out: { grpcStatus?: string; grpcMessage?: string } = {};
          const read = (h: http.IncomingHttpHeaders) => {
            if (h["grpc-status"] !== undefined) out.grpcStatus = String(h["grpc-status"]);
            if (h["grpc-message"] !== undefined) out.grpcMessage = decodeURIComponent(String(h["grpc-message"]));
          };
          req.on("response", read);
          req.on("trailers", read);
          req.on("data", () => {});
          req.on("end", () => {
            session.close();
            resolve(out);
          });
          req.on("error", reject);
          req.end(envelope(garbage()));
        }),
    );
    expect([Code.InvalidArgument, Code.Internal]).toContain(Number(grpcStatus));
    expect(grpcMessage).toMatch(/parse|invalid|decode/i);
  });

  it("gRPC-Web (HTTP/1.1): an error naming the parse failure, nothing created", async () => {
    const { status, headers, body } = await unchanged(() =>
      rawPost(CREATE_PATH, envelope(garbage()), "application/grpc-web+proto"),
    );
    expect(status).toBe(200);
    // A trailers-only answer puts grpc-status in the headers; otherwise it is in the trailer frame.
    const trailer = body.toString("latin1");
    const grpcStatus = headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(trailer)?.[1];
    const grpcMessage = headers.get("grpc-message") ?? /grpc-message:\s*(.*)/.exec(trailer)?.[1];
    expect([Code.InvalidArgument, Code.Internal]).toContain(Number(grpcStatus));
    expect(decodeURIComponent(grpcMessage ?? "")).toMatch(/parse|invalid|decode/i);
  });
});

// ---------------------------------------------------------------------------------------------
// Legacy URLs: HTTP 200, stat ERR_BAD_PARAMS, nothing stored

async function legacyPost(path: string, body: string | Buffer) {
  const res = await fetch(svc.baseUrl + path, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, text: await res.text() };
}

async function expectBadParams(answer: Promise<{ status: number; text: string }>) {
  const { status, text } = await unchanged(() => answer);
  expect(status).toBe(200);
  const json = JSON.parse(text);
  expect(json.stat).toBe("ERR_BAD_PARAMS");
  expect(typeof json.error).toBe("string");
  expect(json.error.length).toBeGreaterThan(0);
  return json;
}

const J = (value: unknown) => JSON.stringify(value);

/** Task bodies for /baichuan/task_create, each of which must be refused. */
const LEGACY_CREATE_BODIES: Array<[string, string | Buffer]> = [
  ["not JSON", "handler=/demo_api/ping"],
  ["truncated JSON", '{"handler": "/demo_api/ping"'],
  ["empty body", ""],
  ["whitespace body", "  \n "],
  ["random bytes", garbage()],
  ["a JSON array", J([{ handler: "/demo_api/ping" }])],
  ["a JSON string", J("/demo_api/ping")],
  ["a JSON number", "5"],
  ["JSON null", "null"],
  ["JSON true", "true"],
  ["missing handler", J({ params: {} })],
  ["handler a number", J({ handler: 5 })],
  ["handler null", J({ handler: null })],
  ["handler an array", J({ handler: ["/demo_api/ping"] })],
  ["handler an object", J({ handler: { path: "/demo_api/ping" } })],
  ...BAD_HANDLERS.map(([name, handler]): [string, string] => [`handler ${name}`, J({ handler, params: {} })]),
  ...UNKNOWN_HANDLERS.map((handler): [string, string] => [`unknown handler ${handler}`, J({ handler, params: {} })]),
  ["params an array", J({ handler: "/demo_api/ping", params: [1, 2] })],
  ["params a string", J({ handler: "/demo_api/ping", params: "x" })],
  ["params a number", J({ handler: "/demo_api/ping", params: 5 })],
  ["params false", J({ handler: "/demo_api/ping", params: false })],
  ...OPTION_FIELDS.flatMap(([, field]) =>
    (
      [
        ["negative", -1],
        ["zero", 0],
        ["zero as a string", "0"],
        ["negative as a string", "-5"],
        ["NaN", "NaN"],
        ["Infinity", "Infinity"],
        ["1e400", "1e400"],
        ["not a number", "abc"],
        ["empty string", ""],
        ["true", true],
        ["an array", [1]],
        ["an object", { seconds: 1 }],
        ["over one year", 365 * 86400 + 1],
        ["10 years", 10 * 365 * 86400],
      ] as Array<[string, unknown]>
    ).map(([what, value]): [string, string] => [`${field} ${what}`, J({ handler: "/demo_api/ping", [field]: value })]),
  ),
  ["timeout of 8 days", J({ handler: "/demo_api/ping", timeout: 8 * 86400 })],
  ["msg_create_unique an object", J({ handler: "/demo_api/ping", msg_create_unique: { a: 1 } })],
  ["msg_create_unique an array", J({ handler: "/demo_api/ping", msg_create_unique: ["yes"] })],
  ["msg_create_unique maybe", J({ handler: "/demo_api/ping", msg_create_unique: "maybe" })],
  ["msg_create_unique 2", J({ handler: "/demo_api/ping", msg_create_unique: 2 })],
  ["params of 1.1 MB", J({ handler: "/demo_api/echo", params: { blob: "x".repeat(1_100_000) } })],
  ["params nested 200 deep", J({ handler: "/demo_api/echo", params: nested(200) })],
];

describe("legacy /baichuan/task_create with bad input: ERR_BAD_PARAMS", () => {
  it.each(LEGACY_CREATE_BODIES)("%s", async (_, body) => {
    await expectBadParams(legacyPost("/baichuan/task_create", body));
  });

  it("a GET (task_create takes a POST)", async () => {
    const answer = fetch(`${svc.baseUrl}/baichuan/task_create?handler=/demo_api/ping`).then(async (r) => ({
      status: r.status,
      text: await r.text(),
    }));
    await expectBadParams(answer);
  });

  it("names the faulty field in the error", async () => {
    expect((await expectBadParams(legacyPost("/baichuan/task_create", J({ handler: "/a/b/c" })))).error).toMatch(/handler/);
    expect(
      (await expectBadParams(legacyPost("/baichuan/task_create", J({ handler: "/demo_api/ping", timeout: -1 })))).error,
    ).toMatch(/timeout/);
    expect(
      (await expectBadParams(legacyPost("/baichuan/task_create", J({ handler: "/demo_api/ping", params: [] })))).error,
    ).toMatch(/params/);
  });
});

describe("legacy /baichuan/task_get with ids no task can have: ERR_MSG_NOT_EXIST, as the original answered any unknown id", () => {
  const get = (query: string) =>
    fetch(`${svc.baseUrl}/baichuan/task_get${query}`).then(async (r) => ({ status: r.status, text: await r.text() }));
  const expectNotExist = async (answer: Promise<{ status: number; text: string }>) => {
    const { status, text } = await unchanged(() => answer);
    expect(status).toBe(200);
    expect(JSON.parse(text)).toEqual({ stat: "ERR_MSG_NOT_EXIST", task_info: {} });
  };
  const NOT_IDS = BAD_IDS.filter(([, id]) => id !== "");

  it.each(NOT_IDS)("GET, task_id %s", async (_, id) => {
    await expectNotExist(get(`?task_id=${encodeURIComponent(id)}`));
  });

  it.each(NOT_IDS)("POST, task_id %s", async (_, id) => {
    await expectNotExist(legacyPost("/baichuan/task_get", J({ task_id: id })));
  });
});

describe("legacy /baichuan/task_get without a usable task_id: ERR_BAD_PARAMS", () => {
  const get = (query: string) =>
    fetch(`${svc.baseUrl}/baichuan/task_get${query}`).then(async (r) => ({ status: r.status, text: await r.text() }));

  it.each([
    ["empty", ""],
    ["over 256 characters", "A".repeat(257)],
  ])("GET and POST, task_id %s", async (_, id) => {
    await expectBadParams(get(`?task_id=${encodeURIComponent(id)}`));
    await expectBadParams(legacyPost("/baichuan/task_get", J({ task_id: id })));
  });

  it.each<[string, string | Buffer]>([
    ["no task_id", J({})],
    ["task_id a number", J({ task_id: 5 })],
    ["task_id null", J({ task_id: null })],
    ["task_id an array", J({ task_id: ["0000000000000000FFFF"] })],
    ["task_id an object", J({ task_id: { id: "0000000000000000FFFF" } })],
    ["body an array", J(["0000000000000000FFFF"])],
    ["body a string", J("0000000000000000FFFF")],
    ["body not JSON", "task_id=0000000000000000FFFF"],
    ["random bytes", garbage()],
  ])("POST, %s", async (_, body) => {
    await expectBadParams(legacyPost("/baichuan/task_get", body));
  });

  it("GET without task_id", async () => {
    await expectBadParams(get(""));
  });

  it("a well-formed unknown id is ERR_MSG_NOT_EXIST (the control case)", async () => {
    const { status, text } = await unchanged(() => get("?task_id=0000000000000000FFFF"));
    expect(status).toBe(200);
    expect(JSON.parse(text).stat).toBe("ERR_MSG_NOT_EXIST");
  });
});

describe("legacy synchronous calls with bad bodies: ERR_BAD_PARAMS", () => {
  it.each<[string, string | Buffer]>([
    ["not JSON", "name=x"],
    ["a JSON array", "[1]"],
    ["a JSON string", '"x"'],
    ["JSON null", "null"],
    ["random bytes", garbage()],
  ])("POST /demo_api/echo, %s", async (_, body) => {
    await expectBadParams(legacyPost("/demo_api/echo", body));
  });
});

describe("legacy bodies over the 1 MiB + 64 KiB body limit (HTTP/1.1 keep-alive)", () => {
  /** One request over `agent` (one keep-alive socket); rejects when no answer comes in `timeoutMs`. */
  function h1(agent: http.Agent, method: string, path: string, body?: string, timeoutMs = 2000) {
    return new Promise<{ status: number; text: string }>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders =
        body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
      const req = http.request(svc.baseUrl + path, { method, agent, headers, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end(body);
    });
  }
  const big = (path: string) =>
    path === "/baichuan/task_create"
      ? J({ handler: "/demo_api/echo", params: { blob: "x".repeat(2_000_000) } })
      : path === "/baichuan/task_get"
        ? J({ task_id: "x".repeat(2_000_000) })
        : J({ name: "x".repeat(2_000_000) });
  const PATHS = ["/baichuan/task_create", "/baichuan/task_get", "/demo_api/echo"];

  it.each(PATHS)("POST %s with 2 MB: ERR_BAD_PARAMS, nothing stored", async (path) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const json = await expectBadParams(h1(agent, "POST", path, big(path)));
      expect(json.error).toMatch(/larger than/);
    } finally {
      agent.destroy();
    }
  });

  it.each(PATHS)("after a refused 2 MB POST %s, the same keep-alive connection answers the next request", async (path) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await h1(agent, "POST", path, big(path))).status).toBe(200);
      const next = await h1(agent, "GET", "/healthz");
      expect(next.status).toBe(200);
      expect(JSON.parse(next.text)).toEqual({ stat: "OK" });
    } finally {
      agent.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Last: the service is still healthy, and the lenient cases that must succeed do succeed.

describe("after all of that", () => {
  it("/healthz answers OK", async () => {
    const res = await fetch(`${svc.baseUrl}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ stat: "OK" });
  });

  it.each(PROTOCOLS)("a normal create + get works over %s", async (protocol) => {
    const client = svc.clients[protocol];
    const { taskId } = await client.createTask({ handler: "/demo_api/hello", params: { name: protocol } });
    const task = await eventually(async () => {
      const { task } = await client.getTask({ taskId });
      return task?.status === TaskStatus.FINISHED ? task : undefined;
    });
    expect(task.result?.kind.value).toMatchObject({ fields: { message: { kind: { value: `hello, ${protocol}` } } } });
  });

  it.each(PROTOCOLS)(
    `params nested ${MAX_PARAMS_DEPTH} levels (the limit) are accepted and read back over %s`,
    async (protocol) => {
      const client = svc.clients[protocol];
      const params = nested(MAX_PARAMS_DEPTH) as never;
      // Created over the legacy URL (JSON), then created and read over the protocol (binary).
      const created = JSON.parse((await legacyPost("/baichuan/task_create", J({ handler: "/demo_api/echo", params }))).text);
      expect(created.stat).toBe("OK");
      expect(
        await codeOf(client.getTask({ taskId: created.data.task_id }).then((r) => expect(r.task!.params).toEqual(params))),
      ).toBeUndefined();
      expect(await codeOf(client.createTask({ handler: "/demo_api/echo", params }))).toBeUndefined();
    },
  );

  it("a normal create + get works over the legacy URLs; params null is taken as {}", async () => {
    const created = await legacyPost("/baichuan/task_create", J({ handler: "/demo_api/echo", params: null }));
    const id = JSON.parse(created.text).data.task_id;
    const done = await eventually(async () => {
      const json: any = await (await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${id}`)).json();
      return json.stat === "OK" ? json : undefined;
    });
    expect(done.data).toEqual({});
  });
});
