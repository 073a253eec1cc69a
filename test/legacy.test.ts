/**
 * The original framework's URLs through the real listener, over HTTP/1.1 with fetch and with the
 * real `curl` binary: /baichuan/task_create, /baichuan/task_get (every stat), task_info field names,
 * options (msg_create_unique, result_ttl, ...), X-Real-IP, x-reqid/x-cost headers, unknown paths,
 * synchronous handler calls and /healthz.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handlerTag, taskKey } from "../src/store/keys.js";
import { eventually, startService, type TestService } from "./support/service.js";

const execFileP = promisify(execFile);

/** A task id as the service hands them out: 20 upper-case hex characters. */
const ID_RE = /^[0-9A-F]{20}$/;
/** The original's time format: 2025-05-25T05:25:01.375784Z (UTC, microseconds). */
const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
/** Fields of a queued task in the seed's Redis layout. */
const QUEUED_FIELDS = ["origin", "status", "timeout", "ip", "created_at", "enqueued_at", "handle_worker", "data"];
/** Fields of a finished or failed task in the seed's layout (task_get leaves out a finished task's `result`: `data` has it). */
const ENDED_FIELDS = [...QUEUED_FIELDS, "cost", "result_ttl", "started_at", "ended_at", "result"];
/** BaiChuan's own bookkeeping fields, never shown in task_info. */
const INTERNAL_FIELDS = ["ver", "unique", "drop_at"];

let svc: TestService;
/** A second process on the same Redis with a handler of its own and no worker: its tasks stay queued. */
let idle: TestService;
let base: string;

beforeAll(async () => {
  svc = await startService();
  idle = await startService({
    redis: svc.redis,
    demo: false,
    worker: false,
    handlers: { "/idle_api/wait": () => ({ never: "run" }) },
  });
  base = svc.baseUrl;
});
afterAll(async () => {
  await idle?.close();
  await svc?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

async function http(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

function post(path: string, body: unknown, headers: Record<string, string> = {}, baseUrl = base): Promise<Answer> {
  return http(baseUrl + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function createTask(body: unknown, headers: Record<string, string> = {}, baseUrl = base): Promise<string> {
  const { status, json } = await post("/baichuan/task_create", body, headers, baseUrl);
  expect(status).toBe(200);
  expect(json.stat).toBe("OK");
  expect(json.data.task_id).toMatch(ID_RE);
  return json.data.task_id as string;
}

function taskGet(id: string, baseUrl = base): Promise<Answer> {
  return http(`${baseUrl}/baichuan/task_get?task_id=${encodeURIComponent(id)}`);
}

/** Poll task_get until its stat is `stat` (tests only). */
function untilStat(id: string, stat: string, timeoutMs = 5000): Promise<any> {
  return eventually(async () => {
    const { json } = await taskGet(id);
    return json.stat === stat ? json : undefined;
  }, timeoutMs);
}

/** A well-formed id for a handler that no task has. */
function unusedId(handler = "/demo_api/ping"): string {
  return handlerTag(handler) + randomBytes(8).toString("hex").toUpperCase();
}

describe("the seed's curl commands", () => {
  it("curl -d (form content type) creates a task and curl task_get reads it back", async () => {
    // Exactly the seed's commands: curl -d '{"handler":"/demo_api/ping", "params":{}}' "http://.../baichuan/task_create"
    const created = await execFileP("curl", ["-d", '{"handler":"/demo_api/ping", "params":{}}', `${base}/baichuan/task_create`]);
    const answer = JSON.parse(created.stdout);
    expect(answer).toEqual({ stat: "OK", data: { task_id: expect.stringMatching(ID_RE) } });
    const id: string = answer.data.task_id;

    // curl "http://.../baichuan/task_get?task_id=..." until the ping has run.
    const done = await eventually(async () => {
      const { stdout } = await execFileP("curl", [`${base}/baichuan/task_get?task_id=${id}`]);
      const json = JSON.parse(stdout);
      return json.stat === "OK" ? json : undefined;
    });
    expect(done.data).toEqual({ pong: true });
    expect(done.task_info.task_id).toBe(id);
    expect(done.task_info.origin).toBe("/demo_api/ping");
    expect(done.task_info.status).toBe("finished");
  });

  it("answers curl with HTTP 200, a JSON content type and the x-reqid / x-cost headers", async () => {
    const { stdout } = await execFileP("curl", [
      "-s",
      "-i",
      "-d",
      '{"handler":"/demo_api/ping", "params":{}}',
      `${base}/baichuan/task_create`,
    ]);
    const [head, body] = stdout.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 200\b/);
    expect(head).toMatch(/^content-type: application\/json/im);
    expect(head).toMatch(/^x-reqid: [0-9A-F]{16}\r?$/im);
    expect(head).toMatch(/^x-cost: \d+\.\d{6}\r?$/im);
    expect(JSON.parse(body!).stat).toBe("OK");
  });

  it("a synchronous call works with curl too", async () => {
    const { stdout } = await execFileP("curl", ["-s", "-d", '{"name":"curl"}', `${base}/demo_api/hello`]);
    expect(JSON.parse(stdout)).toEqual({ stat: "OK", message: "hello, curl" });
  });
});

describe("task_create", () => {
  it('answers exactly {"stat":"OK","data":{"task_id":...}}', async () => {
    const { status, json } = await post("/baichuan/task_create", { handler: "/demo_api/ping", params: {} });
    expect(status).toBe(200);
    expect(json).toEqual({ stat: "OK", data: { task_id: expect.stringMatching(ID_RE) } });
  });

  it("gives every task a new id whose first 4 characters are its handler's tag", async () => {
    const a = await createTask({ handler: "/demo_api/echo", params: { n: 1 } });
    const b = await createTask({ handler: "/demo_api/echo", params: { n: 1 } });
    expect(a).not.toBe(b);
    expect(a.slice(0, 4)).toBe(handlerTag("/demo_api/echo"));
    expect(await svc.redis.client.exists(taskKey(a))).toBe(1);
  });

  it("treats missing or null params as {}", async () => {
    for (const body of [{ handler: "/demo_api/echo" }, { handler: "/demo_api/echo", params: null }]) {
      const id = await createTask(body);
      const done = await untilStat(id, "OK");
      expect(done.data).toEqual({});
      expect(done.task_info.data).toBe("{}");
    }
  });
});

describe("task_get: one test per stat", () => {
  it("ERR_MSG_NOT_EXIST for a well-formed id that no task has (either case)", async () => {
    const id = unusedId();
    for (const asked of [id, id.toLowerCase()]) {
      const { status, json } = await taskGet(asked);
      expect(status).toBe(200);
      expect(json.stat).toBe("ERR_MSG_NOT_EXIST");
    }
  });

  it.each([
    ["the seed's own 16-hex form", "AC3C301A7CA516EA"],
    ["16 hex, lower case", "ac3c301a7ca516ea"],
    ["a word", "nope"],
    ["a path", "../../x"],
    ["a Redis glob", "mq:msg:*"],
    ["unicode", "百川任务"],
    ["one character", "x"],
    ["256 characters", "x".repeat(256)],
  ])("ERR_MSG_NOT_EXIST for an id no task has, whatever its form: %s", async (_, id) => {
    for (const answer of [await taskGet(id), await post("/baichuan/task_get", { task_id: id })]) {
      expect(answer.status).toBe(200);
      expect(answer.json).toEqual({ stat: "ERR_MSG_NOT_EXIST", task_info: {} });
    }
  });

  it.each([
    ["missing", {}],
    ["empty", { task_id: "" }],
    ["not a string", { task_id: 5 }],
    ["null", { task_id: null }],
    ["longer than 256 characters", { task_id: "x".repeat(257) }],
  ])("ERR_BAD_PARAMS for a task_id that is %s", async (_, body) => {
    const { status, json } = await post("/baichuan/task_get", body);
    expect(status).toBe(200);
    expect(json.stat).toBe("ERR_BAD_PARAMS");
    expect(json.error).toMatch(/^task_id: /);
  });

  it("ERR_MSG_IN_QUEUED while no worker has the handler, with the seed's queued fields", async () => {
    // Created through the worker-less process that has the handler; read through both processes.
    const id = await createTask({ handler: "/idle_api/wait", params: { k: "v" } }, {}, idle.baseUrl);
    for (const url of [base, idle.baseUrl]) {
      const { json } = await taskGet(id, url);
      expect(json.stat).toBe("ERR_MSG_IN_QUEUED");
      const info = json.task_info;
      expect(Object.keys(info)).toEqual(expect.arrayContaining(QUEUED_FIELDS));
      expect(info).toMatchObject({ task_id: id, origin: "/idle_api/wait", status: "queued", handle_worker: "", timeout: "180" });
      expect(JSON.parse(info.data)).toEqual({ k: "v" });
      expect(info.created_at).toMatch(TIME_RE);
      expect(info.enqueued_at).toMatch(TIME_RE);
      for (const absent of ["started_at", "ended_at", "result", ...INTERNAL_FIELDS]) expect(info).not.toHaveProperty(absent);
    }
  });

  it("ERR_MSG_IN_STARTED while a /demo_api/sleep task runs, then OK", async () => {
    const id = await createTask({ handler: "/demo_api/sleep", params: { seconds: 0.8 } });
    const running = await untilStat(id, "ERR_MSG_IN_STARTED");
    const info = running.task_info;
    expect(info.status).toBe("started");
    expect(info.handle_worker).toMatch(new RegExp(`:${svc.server.port}:${process.pid}$`));
    expect(info.started_at).toMatch(TIME_RE);
    expect(info.result_ttl).toBe("86400");
    for (const absent of ["ended_at", "result"]) expect(info).not.toHaveProperty(absent);

    const done = await untilStat(id, "OK");
    expect(done.data).toEqual({ slept: 0.8 });
  });

  it("a started task carries `cost` as the seed's started layout says (origin, ..., data, cost, result_ttl)", async () => {
    const id = await createTask({ handler: "/demo_api/sleep", params: { seconds: 0.5 } });
    const running = await untilStat(id, "ERR_MSG_IN_STARTED");
    expect(Object.keys(running.task_info)).toEqual(expect.arrayContaining([...QUEUED_FIELDS, "cost", "result_ttl"]));
    await untilStat(id, "OK");
  });

  it("ERR_MSG_EXE_FAILED when the handler throws", async () => {
    const id = await createTask({ handler: "/demo_api/fail", params: { message: "boom" } });
    const failed = await untilStat(id, "ERR_MSG_EXE_FAILED");
    expect(failed.error).toBe("boom");
    expect(failed.task_info.status).toBe("failed");
    expect(JSON.parse(failed.task_info.result)).toEqual({ stat: "ERR_SERVER_EXCEPTION", error: "boom" });
    expect(failed.task_info.ended_at).toMatch(TIME_RE);
  });

  it("ERR_MSG_EXE_FAILED when the handler rejects its params", async () => {
    const id = await createTask({ handler: "/demo_api/hello", params: { name: 5 } });
    const failed = await untilStat(id, "ERR_MSG_EXE_FAILED");
    expect(JSON.parse(failed.task_info.result).stat).toBe("ERR_BAD_PARAMS");
  });

  describe("ERR_MSG_RESULT_FAILED when a finished task's stored result is not JSON or lacks stat", () => {
    it.each<[string, string | undefined]>([
      ["not JSON", "this is not json"],
      ["truncated JSON", '{"stat": "OK", "data"'],
      ["JSON without stat", '{"data": {"pong": true}}'],
      ["stat not a string", '{"stat": 5, "data": {}}'],
      ["a JSON string", '"OK"'],
      ["a JSON array", '["stat", "OK"]'],
      ["JSON null", "null"],
      ["an empty string", ""],
      ["no result field at all", undefined],
    ])("%s", async (_, result) => {
      const id = unusedId();
      const fields: Record<string, string> = {
        origin: "/demo_api/ping",
        status: "finished",
        timeout: "180",
        ip: "127.0.0.1",
        created_at: "2025-05-25T05:25:01.375784Z",
        enqueued_at: "2025-05-25T05:25:01.375784Z",
        handle_worker: "hostname:5201:11083",
        data: "{}",
        cost: "116.321657",
        result_ttl: "86400",
        started_at: "2025-05-25T05:25:01.400000Z",
        ended_at: "2025-05-25T05:27:00.000000Z",
      };
      if (result !== undefined) fields.result = result;
      await svc.redis.client.hset(taskKey(id), fields);
      await svc.redis.client.expire(taskKey(id), 60);
      const { status, json } = await taskGet(id);
      expect(status).toBe(200);
      expect(json.stat).toBe("ERR_MSG_RESULT_FAILED");
      expect(json.task_info).toMatchObject({ task_id: id, status: "finished", cost: "116.321657" });
    });
  });

  it("OK with the handler's data, and task_info with every seed field name but the result `data` carries", async () => {
    const before = Date.now();
    const id = await createTask({ handler: "/demo_api/hello", params: { name: "legacy" } });
    const done = await untilStat(id, "OK");
    expect(done.data).toEqual({ message: "hello, legacy" });

    const info = done.task_info;
    expect(Object.keys(info)).toEqual(expect.arrayContaining(ENDED_FIELDS.filter((f) => f !== "result")));
    expect(info).not.toHaveProperty("result");
    for (const internal of INTERNAL_FIELDS) expect(info).not.toHaveProperty(internal);
    expect(info).toMatchObject({
      task_id: id,
      origin: "/demo_api/hello",
      status: "finished",
      timeout: "180",
      ip: "127.0.0.1",
      result_ttl: "86400",
    });
    expect(JSON.parse(info.data)).toEqual({ name: "legacy" });
    expect(info.handle_worker).toMatch(new RegExp(`^.+:${svc.server.port}:${process.pid}$`));
    expect(info.cost).toMatch(/^\d+\.\d{6}$/);
    for (const field of ["created_at", "enqueued_at", "started_at", "ended_at"]) {
      expect(info[field]).toMatch(TIME_RE);
      expect(Date.parse(info[field])).toBeGreaterThanOrEqual(before - 1000);
      expect(Date.parse(info[field])).toBeLessThanOrEqual(Date.now() + 1000);
    }
    expect(info.created_at <= info.started_at && info.started_at <= info.ended_at).toBe(true);
  });

  it("a finished task's result is in the answer once: in `data`, not again in task_info", async () => {
    // 300 KB of result: the answer used to carry it twice (data, and task_info.result).
    const marker = `M${randomBytes(8).toString("hex")}`;
    const name = marker + "x".repeat(300_000);
    const id = await createTask({ handler: "/demo_api/hello", params: { name } });
    await untilStat(id, "OK");
    const { text, json } = await taskGet(id);
    expect(json.data).toEqual({ message: `hello, ${name}` });
    expect(text.split(`hello, ${marker}`).length - 1).toBe(1);
    expect(text.length).toBeLessThan(2.5 * name.length); // the params once (task_info.data) and the result once
    // canghai msg_info shows the task's fields, its result among them, once.
    const info = await post("/canghai/msg_info", { task_id: id });
    expect(info.json.stat).toBe("OK");
    expect(JSON.parse(info.json.data.result)).toEqual({ stat: "OK", data: { message: `hello, ${name}` } });
    expect(info.text.split(`hello, ${marker}`).length - 1).toBe(1);
  });

  it("times never go backwards: created_at <= enqueued_at <= started_at <= ended_at, over 200 quick tasks", async () => {
    const ids = await Promise.all(
      Array.from({ length: 200 }, (_, i) => createTask({ handler: "/demo_api/echo", params: { i } })),
    );
    const infos = await Promise.all(ids.map(async (id) => (await untilStat(id, "OK")).task_info));
    const backwards = infos.filter(
      (t) => !(t.created_at <= t.enqueued_at && t.enqueued_at <= t.started_at && t.started_at <= t.ended_at),
    );
    expect(backwards.map((t) => [t.created_at, t.enqueued_at, t.started_at, t.ended_at])).toEqual([]);
  });

  it("also answers a POST with a JSON body {task_id}", async () => {
    const id = await createTask({ handler: "/demo_api/ping" });
    await untilStat(id, "OK");
    const { json } = await post("/baichuan/task_get", { task_id: id });
    expect(json.stat).toBe("OK");
    expect(json.data).toEqual({ pong: true });
  });
});

describe("task options", () => {
  it('msg_create_unique:"yes" returns the same id while the first is queued or running, a new one after it ended', async () => {
    const body = { handler: "/demo_api/sleep", params: { seconds: 0.4 }, msg_create_unique: "yes" };
    const first = await post("/baichuan/task_create", body);
    expect(first.json.stat).toBe("OK");
    const id = first.json.data.task_id;

    const again = await post("/baichuan/task_create", body);
    expect(again.json.data.task_id).toBe(id);
    // Same params with keys in another order are the same params.
    const reordered = await post("/baichuan/task_create", {
      msg_create_unique: "yes",
      params: { seconds: 0.4 },
      handler: "/demo_api/sleep",
    });
    expect(reordered.json.data.task_id).toBe(id);
    // Different params are another task.
    const other = await createTask({ ...body, params: { seconds: 0.1 } });
    expect(other).not.toBe(id);

    await untilStat(id, "ERR_MSG_IN_STARTED");
    expect((await post("/baichuan/task_create", body)).json.data.task_id).toBe(id);

    await untilStat(id, "OK");
    const after = await createTask(body);
    expect(after).not.toBe(id);
    await untilStat(after, "OK");
  });

  it('without msg_create_unique (or with "no") every create is a new task', async () => {
    const body = { handler: "/demo_api/sleep", params: { seconds: 0.2 } };
    const a = await createTask(body);
    const b = await createTask({ ...body, msg_create_unique: "no" });
    expect(a).not.toBe(b);
  });

  it("result_ttl from the body is stored and the finished task expires after it", async () => {
    const id = await createTask({ handler: "/demo_api/ping", params: {}, result_ttl: 1 });
    const done = await untilStat(id, "OK");
    expect(done.task_info.result_ttl).toBe("1");
    const pttl = await svc.redis.client.pttl(taskKey(id));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await svc.redis.client.exists(taskKey(id))).toBe(0);
    expect((await taskGet(id)).json.stat).toBe("ERR_MSG_NOT_EXIST");
  });

  it("a failed task expires after failure_ttl; timeout is stored; numbers may come as strings", async () => {
    const id = await createTask({ handler: "/demo_api/fail", params: {}, failure_ttl: "2", timeout: "30" });
    const failed = await untilStat(id, "ERR_MSG_EXE_FAILED");
    expect(failed.task_info.timeout).toBe("30");
    const pttl = await svc.redis.client.pttl(taskKey(id));
    expect(pttl).toBeGreaterThan(1000);
    expect(pttl).toBeLessThanOrEqual(2000);
  });
});

describe("X-Real-IP", () => {
  it.each([
    ["IPv4", "203.0.113.7", "203.0.113.7"],
    ["IPv6", "2001:db8::1", "2001:db8::1"],
    ["with spaces around", " 198.51.100.2 ", "198.51.100.2"],
    ["not an address (ignored)", "not-an-ip", "127.0.0.1"],
    ["a list (ignored)", "1.2.3.4, 5.6.7.8", "127.0.0.1"],
    ["out-of-range octets (ignored)", "999.1.1.1", "127.0.0.1"],
    ["a hostname (ignored)", "localhost", "127.0.0.1"],
  ])("%s: stored ip is %j → %j", async (_, header, expected) => {
    const id = await createTask({ handler: "/idle_api/wait" }, { "X-Real-IP": header }, idle.baseUrl);
    const { json } = await taskGet(id);
    expect(json.task_info.ip).toBe(expected);
  });

  it("without the header the peer address is stored", async () => {
    const id = await createTask({ handler: "/idle_api/wait" }, {}, idle.baseUrl);
    expect((await taskGet(id)).json.task_info.ip).toBe("127.0.0.1");
  });
});

describe("x-reqid and x-cost on every answer", () => {
  const requests: Array<[string, () => Promise<Answer>]> = [
    ["task_create", () => post("/baichuan/task_create", { handler: "/demo_api/ping" })],
    ["task_create with a bad body", () => post("/baichuan/task_create", "nope")],
    ["task_get, unknown id", () => taskGet(unusedId())],
    ["task_get, malformed id", () => taskGet("nope")],
    ["a synchronous call", () => post("/demo_api/ping", {})],
    ["a failing synchronous call", () => post("/demo_api/fail", {})],
    ["/healthz", () => http(`${base}/healthz`)],
    ["an unknown path (400)", () => http(`${base}/no/such/path`)],
  ];
  it.each(requests)("%s", async (_, send) => {
    const { headers, json } = await send();
    expect(headers.get("x-reqid")).toMatch(/^[0-9A-F]{16}$/);
    expect(headers.get("x-cost")).toMatch(/^\d+\.\d{6}$/);
    expect(Number(headers.get("x-cost"))).toBeLessThan(5);
    expect(headers.get("content-type")).toMatch(/^application\/json/);
    expect(typeof json.stat).toBe("string");
  });

  it("x-reqid differs between answers", async () => {
    const ids = new Set<string | null>();
    for (let i = 0; i < 5; i++) ids.add((await http(`${base}/healthz`)).headers.get("x-reqid"));
    expect(ids.size).toBe(5);
  });
});

describe("unknown paths answer HTTP 400", () => {
  it.each([
    ["GET", "/"],
    ["GET", "/no/such/path"],
    ["POST", "/demo_api/nope"],
    ["GET", "/demo_api"],
    ["POST", "/baichuan/task_delete"],
    ["GET", "/baichuan/task_get/extra"],
    ["GET", "/idle_api/wait"], // a handler of another process is not callable here
  ])("%s %s", async (method, path) => {
    const { status, json } = await http(base + path, method === "POST" ? { method, body: "{}" } : { method });
    expect(status).toBe(400);
    expect(json.stat).not.toBe("OK");
  });
});

describe("synchronous handler calls", () => {
  it('POST /demo_api/hello {"name":"x"} answers {"stat":"OK","message":"hello, x"}', async () => {
    const { status, json } = await post("/demo_api/hello", { name: "x" });
    expect(status).toBe(200);
    expect(json).toEqual({ stat: "OK", message: "hello, x" });
  });

  it("GET /demo_api/hello?name=y takes params from the query string", async () => {
    const { status, json } = await http(`${base}/demo_api/hello?name=y`);
    expect(status).toBe(200);
    expect(json).toEqual({ stat: "OK", message: "hello, y" });
  });

  it('POST /demo_api/hello {"name":5} answers ERR_BAD_PARAMS', async () => {
    const { status, json } = await post("/demo_api/hello", { name: 5 });
    expect(status).toBe(200);
    expect(json.stat).toBe("ERR_BAD_PARAMS");
    expect(json.error).toMatch(/name/);
  });

  it("/demo_api/fail answers ERR_SERVER_EXCEPTION without any stack trace", async () => {
    for (const params of [{}, { message: "kaboom" }]) {
      const { status, text, json } = await post("/demo_api/fail", params);
      expect(status).toBe(200);
      expect(json.stat).toBe("ERR_SERVER_EXCEPTION");
      expect(json.error).toBe((params as { message?: string }).message ?? "failed on purpose");
      expect(text).not.toMatch(/\bat .+\(|\.ts:\d+|node:internal|file:\/\/|\n\s+at /);
    }
  });

  it("a synchronous call stores nothing in Redis", async () => {
    const keysBefore = (await svc.redis.client.keys("*")).sort();
    await post("/demo_api/echo", { a: 1 });
    await http(`${base}/demo_api/ping`);
    expect((await svc.redis.client.keys("*")).sort()).toEqual(keysBefore);
  });

  it("GET /healthz answers OK", async () => {
    const { status, json } = await http(`${base}/healthz`);
    expect(status).toBe(200);
    expect(json).toEqual({ stat: "OK" });
  });
});
