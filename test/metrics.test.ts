/**
 * GET /metrics and the access log, through the real listener against a real redis-server: counters
 * of tasks made here, queue gauges read from Redis at scrape time, RPC and legacy counters, the
 * WatchTask gauge, /metrics behind the bearer token, and one access log line per request with its
 * request id (x-request-id, echoed back and carried into the task it creates).
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLogger } from "../src/ops/log.js";
import * as keys from "../src/store/keys.js";
import type { NewTask } from "../src/store/store.js";
import type { HandlerContext } from "../src/worker/handlers.js";
import { codeOf, eventually, gate, getJson, startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";

const HOLD = "/metrics_test/hold";
const UNTIL_ABORT = "/metrics_test/until_abort";
const FLAKY = "/metrics_test/flaky";
const LOGS = "/metrics_test/logs";
const HELLO = "/demo_api/hello";
const FAIL = "/demo_api/fail";
const TASK_SERVICE = "baichuan.v1.TaskService";
/** A well-formed id no task has. */
const MISSING_ID = "ABCD0123456789ABCDEF";

/** One scrape, parsed: the value of a sample by name and exact labels. */
interface Scrape {
  text: string;
  contentType: string | null;
  value(name: string, labels?: Record<string, string>): number | undefined;
  has(name: string): boolean;
}

function parseExposition(text: string, contentType: string | null): Scrape {
  const samples = new Map<string, number>();
  const names = new Set<string>();
  const key = (name: string, labels: Record<string, string>) =>
    `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)))}`;
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    names.add(m[1]!);
    samples.set(key(m[1]!, labels), Number(m[3]));
  }
  return {
    text,
    contentType,
    value: (name, labels = {}) => samples.get(key(name, labels)),
    has: (name) => names.has(name),
  };
}

async function scrape(svc: TestService, headers: Record<string, string> = {}): Promise<Scrape> {
  const res = await fetch(`${svc.baseUrl}/metrics`, { headers });
  expect(res.status).toBe(200);
  return parseExposition(await res.text(), res.headers.get("content-type"));
}

/** Scrape until `check` holds (worker counters are written just after a task's end is published). */
async function scrapeUntil(svc: TestService, check: (s: Scrape) => boolean): Promise<Scrape> {
  let last: Scrape | undefined;
  try {
    return await eventually(async () => {
      last = await scrape(svc);
      return check(last) ? last : undefined;
    });
  } catch (err) {
    console.log(last?.text);
    throw err;
  }
}

describe("GET /metrics", () => {
  const hold = gate();
  let flakyRuns = 0;
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService({
      handlers: {
        [HOLD]: async () => hold.opened,
        [UNTIL_ABORT]: (_p: unknown, ctx: HandlerContext) =>
          new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
        [FLAKY]: () => {
          flakyRuns++;
          if (flakyRuns === 1) throw new Error("first run fails");
          return { run: flakyRuns };
        },
      },
      // One slot: a held task keeps the next ones queued.
      worker: { concurrency: 1, retryBaseMs: 10 },
    });
  });
  afterAll(async () => {
    hold.open();
    await svc?.close();
  });

  it("answers the text exposition format with its content type, default process metrics included", async () => {
    const s = await scrape(svc);
    expect(s.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(s.has("process_cpu_user_seconds_total")).toBe(true);
    expect(s.has("nodejs_heap_size_used_bytes")).toBe(true);
    expect(s.text).toContain("# TYPE baichuan_tasks_created_total counter");
    expect(s.text).toContain("# TYPE baichuan_handler_duration_seconds histogram");
  });

  it("counts tasks created, finished and failed by handler, and their runs in the duration histogram", async () => {
    const client = svc.clients.grpc;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await client.createTask({ handler: HELLO, params: { name: `x${i}` } })).taskId);
    for (let i = 0; i < 2; i++) ids.push((await client.createTask({ handler: FAIL, params: {} })).taskId);
    const ended = await Promise.all(ids.map((id) => svc.bc.wait(id, { timeoutMs: 60_000 })));
    expect(ended.map((t) => t.status)).toEqual(["finished", "finished", "finished", "failed", "failed"]);

    const s = await scrapeUntil(
      svc,
      (s) =>
        s.value("baichuan_tasks_finished_total", { handler: HELLO }) === 3 &&
        s.value("baichuan_tasks_failed_total", { handler: FAIL }) === 2,
    );
    expect(s.value("baichuan_tasks_created_total", { handler: HELLO })).toBe(3);
    expect(s.value("baichuan_tasks_created_total", { handler: FAIL })).toBe(2);
    expect(s.value("baichuan_tasks_finished_total", { handler: FAIL })).toBeUndefined();
    expect(s.value("baichuan_tasks_failed_total", { handler: HELLO })).toBeUndefined();
    expect(s.value("baichuan_handler_duration_seconds_count", { handler: HELLO })).toBe(3);
    expect(s.value("baichuan_handler_duration_seconds_count", { handler: FAIL })).toBe(2);
    expect(s.value("baichuan_handler_duration_seconds_bucket", { handler: HELLO, le: "+Inf" })).toBe(3);
    // The finished tasks left no queue behind.
    expect(s.value("baichuan_queue_depth", { handler: HELLO })).toBe(0);
    expect(s.value("baichuan_tasks_running", { handler: HELLO })).toBe(0);
  });

  it("counts library creates (enqueueMany), but not a unique create that found its live twin", async () => {
    const before = (await scrape(svc)).value("baichuan_tasks_created_total", { handler: HELLO }) ?? 0;
    const results = await svc.bc.enqueueMany([
      { handler: HELLO, params: { name: "many1" } },
      { handler: HELLO, params: { name: "many2" } },
    ]);
    for (const r of results) if (!(r instanceof Error)) await svc.bc.wait(r.id, { timeoutMs: 60_000 });
    const first = await svc.bc.enqueue(UNTIL_ABORT, { u: 1 }, { unique: true });
    const twin = await svc.bc.enqueue(UNTIL_ABORT, { u: 1 }, { unique: true });
    expect(twin).toEqual({ id: first.id, deduplicated: true, replayed: false });
    const s = await scrape(svc);
    expect(s.value("baichuan_tasks_created_total", { handler: HELLO })).toBe(before + 2);
    expect(s.value("baichuan_tasks_created_total", { handler: UNTIL_ABORT })).toBe(1);
    // Canceling the running one counts a canceled run.
    await eventually(async () => (await svc.bc.getTask(first.id)).status === "started");
    await svc.bc.cancel(first.id);
    await svc.bc.wait(first.id, { timeoutMs: 60_000 });
    const after = await scrapeUntil(svc, (s) => s.value("baichuan_tasks_canceled_total", { handler: UNTIL_ABORT }) === 1);
    expect(after.value("baichuan_tasks_finished_total", { handler: UNTIL_ABORT })).toBeUndefined();
  });

  it("counts a failed run that will be retried as retried, then its successful run as finished", async () => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: FLAKY, options: { maxAttempts: 2 } });
    expect((await svc.bc.wait(taskId, { timeoutMs: 60_000 })).status).toBe("finished");
    const s = await scrapeUntil(svc, (s) => s.value("baichuan_tasks_finished_total", { handler: FLAKY }) === 1);
    expect(s.value("baichuan_tasks_retried_total", { handler: FLAKY })).toBe(1);
    expect(s.value("baichuan_tasks_failed_total", { handler: FLAKY })).toBeUndefined();
    expect(s.value("baichuan_handler_duration_seconds_count", { handler: FLAKY })).toBe(2);
  });

  it("counts RPCs by method and code: CreateTask OK, GetTask OK and NOT_FOUND", async () => {
    const before = await scrape(svc);
    const rpc = (s: Scrape, method: string, code: string) =>
      s.value("baichuan_rpc_requests_total", { service: TASK_SERVICE, method, code }) ?? 0;
    const { taskId } = await svc.clients["connect-h1"].createTask({ handler: HELLO, params: {} });
    await svc.clients["grpc-web"].getTask({ taskId });
    expect(await codeOf(svc.clients.grpc.getTask({ taskId: MISSING_ID }))).toBe(Code.NotFound);
    expect(await codeOf(svc.clients["connect-h2"].getTask({ taskId: MISSING_ID }))).toBe(Code.NotFound);
    const s = await scrape(svc);
    expect(rpc(s, "CreateTask", "OK")).toBe(rpc(before, "CreateTask", "OK") + 1);
    expect(rpc(s, "GetTask", "OK")).toBe(rpc(before, "GetTask", "OK") + 1);
    expect(rpc(s, "GetTask", "NOT_FOUND")).toBe(rpc(before, "GetTask", "NOT_FOUND") + 2);
    expect(rpc(s, "GetTask", "INVALID_ARGUMENT")).toBe(rpc(before, "GetTask", "INVALID_ARGUMENT"));
    // The latency histogram has the same labels and counts.
    expect(s.value("baichuan_rpc_duration_seconds_count", { service: TASK_SERVICE, method: "GetTask", code: "NOT_FOUND" })).toBe(
      rpc(s, "GetTask", "NOT_FOUND"),
    );
  });

  it("counts legacy URLs by path and stat; an unknown path is 'other'", async () => {
    const before = await scrape(svc);
    const legacy = (s: Scrape, path: string, stat: string) => s.value("baichuan_legacy_requests_total", { path, stat }) ?? 0;
    await getJson(svc.baseUrl, `/baichuan/task_get?task_id=${MISSING_ID}`);
    await getJson(svc.baseUrl, "/demo_api/hello?name=y");
    await getJson(svc.baseUrl, "/no/such/path/at/all");
    const s = await scrape(svc);
    expect(legacy(s, "/baichuan/task_get", "ERR_MSG_NOT_EXIST")).toBe(
      legacy(before, "/baichuan/task_get", "ERR_MSG_NOT_EXIST") + 1,
    );
    expect(legacy(s, HELLO, "OK")).toBe(legacy(before, HELLO, "OK") + 1);
    expect(legacy(s, "other", "ERR_NOT_FOUND")).toBe(legacy(before, "other", "ERR_NOT_FOUND") + 1);
    expect(s.text).not.toContain("/no/such/path");
  });

  it("shows open WatchTask streams (both paths), and counts a stream when it ends", async () => {
    const rpcWatch = (s: Scrape, code: string) =>
      s.value("baichuan_rpc_requests_total", { service: TASK_SERVICE, method: "WatchTask", code }) ?? 0;
    const before = await scrape(svc);
    expect(before.value("baichuan_watch_streams_open")).toBe(0);
    // A task that stays queued: UNTIL_ABORT holds the one slot.
    const blocker = await svc.bc.enqueue(UNTIL_ABORT, {});
    await eventually(async () => (await svc.bc.getTask(blocker.id)).status === "started");
    const { id } = await svc.bc.enqueue(HELLO, { name: "watched" });
    const controllers = [new AbortController(), new AbortController()];
    const streams = (["grpc", "connect-h1"] as const).map(async (protocol, i) => {
      const seen: string[] = [];
      for await (const { task } of svc.clients[protocol].watchTask({ taskId: id }, { signal: controllers[i]!.signal })) {
        seen.push(String(task?.status));
      }
      return seen;
    });
    try {
      await scrapeUntil(svc, (s) => s.value("baichuan_watch_streams_open") === 2);
    } catch (err) {
      for (const c of controllers) c.abort();
      throw err;
    } finally {
      await svc.bc.cancel(blocker.id); // the queued task runs, and both streams end OK
    }
    expect((await Promise.all(streams)).every((seen) => seen.length >= 2)).toBe(true);
    const s = await scrapeUntil(
      svc,
      (s) => s.value("baichuan_watch_streams_open") === 0 && rpcWatch(s, "OK") === rpcWatch(before, "OK") + 2,
    );
    expect(s.value("baichuan_watch_streams_open")).toBe(0);
  });

  it("reads the queue gauges from Redis at scrape time: depth of a held queue, running, oldest age", async () => {
    const blocker = await svc.bc.enqueue(HOLD, {});
    await eventually(async () => (await svc.bc.getTask(blocker.id)).status === "started");
    for (let i = 0; i < 3; i++) await svc.clients.grpc.createTask({ handler: HOLD, params: { i } });
    await new Promise((r) => setTimeout(r, 50));
    const s = await scrape(svc);
    expect(s.value("baichuan_queue_depth", { handler: HOLD })).toBe(3);
    expect(s.value("baichuan_tasks_running", { handler: HOLD })).toBe(1);
    expect(s.value("baichuan_tasks_scheduled", { handler: HOLD })).toBe(0);
    expect(s.value("baichuan_queue_oldest_age_seconds", { handler: HOLD })).toBeGreaterThan(0.04);
    expect(s.value("baichuan_queue_depth", { handler: HELLO })).toBe(0);
    hold.open();
    const drained = await scrapeUntil(svc, (s) => s.value("baichuan_queue_depth", { handler: HOLD }) === 0);
    expect(drained.value("baichuan_queue_oldest_age_seconds", { handler: HOLD })).toBe(0);
    await scrapeUntil(svc, (s) => s.value("baichuan_tasks_running", { handler: HOLD }) === 0);
  });
});

describe("GET /metrics while Redis is down", () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService({ worker: false });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it("still answers, without the queue gauges, and counts the failed read and the connection errors", async () => {
    await svc.bc.enqueue(HELLO, {}); // a queue to report
    const up = await scrape(svc);
    expect(up.value("baichuan_queue_depth", { handler: HELLO })).toBe(1);
    expect(up.value("baichuan_scrape_errors_total")).toBe(0);
    expect(up.value("baichuan_redis_errors_total")).toBe(0);

    await svc.redis.stop();
    const down = await scrapeUntil(svc, (s) => (s.value("baichuan_redis_errors_total") ?? 0) > 0);
    expect(down.value("baichuan_queue_depth", { handler: HELLO })).toBeUndefined();
    expect(down.has("baichuan_queue_depth")).toBe(false);
    expect(down.value("baichuan_scrape_errors_total")).toBeGreaterThanOrEqual(1);
    expect(down.has("process_resident_memory_bytes")).toBe(true);

    // Back (empty: the test server keeps no data): the gauges return with the queues Redis knows.
    await svc.redis.restart();
    await eventually(() => svc.redis.client.sadd(keys.QUEUES_KEY, keys.queueKey(HELLO)).catch(() => undefined), 60_000);
    await eventually(
      async () => (await scrape(svc)).value("baichuan_queue_depth", { handler: HELLO }) === 0 || undefined,
      10_000,
    );
  });
});

describe("GET /metrics and bearer tokens", () => {
  const FULL = "metrics-full-token-0123456789";
  const PING_ONLY = "metrics-ping-only-token-abcdef";
  let closed: TestService;
  let open: TestService;
  beforeAll(async () => {
    closed = await startService({ worker: false, authTokens: [FULL, `${PING_ONLY}=/demo_api/ping`] });
    open = await startService({ worker: false, redis: closed.redis, authTokens: [FULL], metricsOpen: true });
  });
  afterAll(async () => {
    await open?.close();
    await closed?.close();
  });

  it("needs a token for every handler when tokens are configured: 401 without or with a wrong one, 403 for a limited one", async () => {
    const get = (headers: Record<string, string> = {}) => fetch(`${closed.baseUrl}/metrics`, { headers });
    const none = await get();
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe("Bearer");
    expect(((await none.json()) as { stat: string }).stat).toBe("ERR_UNAUTHENTICATED");
    expect((await get({ authorization: "Bearer not-a-real-token-000000000" })).status).toBe(401);
    const limited = await get({ authorization: `Bearer ${PING_ONLY}` });
    expect(limited.status).toBe(403);
    expect(await limited.text()).not.toContain("baichuan_");
    const full = await get({ authorization: `Bearer ${FULL}` });
    expect(full.status).toBe(200);
    expect(await full.text()).toContain("baichuan_rpc_requests_total");
  });

  it("is open without a token with BAICHUAN_METRICS_OPEN, while the API still needs one", async () => {
    const res = await fetch(`${open.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("baichuan_watch_streams_open");
    expect(await codeOf(open.clients.grpc.getTask({ taskId: MISSING_ID }))).toBe(Code.Unauthenticated);
  });

  it("takes GET only", async () => {
    const res = await fetch(`${open.baseUrl}/metrics`, { method: "POST", body: "{}" });
    expect(res.status).toBe(405);
  });
});

describe("access log and request ids", () => {
  const lines: string[] = [];
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService({
      handlers: {
        [LOGS]: (_p: unknown, ctx: HandlerContext) => {
          ctx.log.info("inside the handler");
          return null;
        },
      },
      logger: createLogger("info", { service: "t" }, (line) => void lines.push(line)),
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  const accessLines = (requestId: string) =>
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "access" && l.request_id === requestId);
  /** The one access line of a request (written when its response closes). */
  const accessLine = async (requestId: string) => {
    await eventually(() => accessLines(requestId).length > 0 || undefined);
    await new Promise((r) => setTimeout(r, 20));
    const found = accessLines(requestId);
    expect(found).toHaveLength(1);
    return found[0]!;
  };

  it("RPC: takes a sane x-request-id, echoes it, and logs one line with method, path, cost, stat, ip", async () => {
    for (const protocol of ["grpc", "connect-h1", "grpc-web"] as const) {
      const id = `rpc-${protocol}.create_1`;
      let echoed: string | null = null;
      await svc.clients[protocol].createTask(
        { handler: HELLO, params: {} },
        {
          headers: { "x-request-id": id },
          onHeader: (h) => {
            echoed = h.get("x-request-id");
          },
        },
      );
      expect(echoed).toBe(id);
      const line = await accessLine(id);
      expect(line).toMatchObject({
        level: "info",
        service: "t",
        method: "POST",
        path: "/baichuan.v1.TaskService/CreateTask",
        stat: "OK",
        status: 200,
        ip: "127.0.0.1",
      });
      expect(typeof line.cost).toBe("number");
      expect(line.cost as number).toBeGreaterThanOrEqual(0);
      expect(line.cost as number).toBeLessThan(5);
    }
  });

  it("RPC errors are logged with their gRPC code name", async () => {
    const id = "rpc-missing";
    expect(await codeOf(svc.clients.grpc.getTask({ taskId: MISSING_ID }, { headers: { "x-request-id": id } }))).toBe(
      Code.NotFound,
    );
    expect((await accessLine(id)).stat).toBe("NOT_FOUND");
    const bad = "rpc-bad-id";
    await codeOf(svc.clients["connect-h1"].getTask({ taskId: "nope" }, { headers: { "x-request-id": bad } }));
    expect((await accessLine(bad)).stat).toBe("INVALID_ARGUMENT");
  });

  it("legacy: the same id is x-request-id and x-reqid; the line has the legacy stat and the path without its query", async () => {
    const id = "legacy.get-1";
    const res = await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${MISSING_ID}`, { headers: { "x-request-id": id } });
    expect(res.headers.get("x-request-id")).toBe(id);
    expect(res.headers.get("x-reqid")).toBe(id);
    expect(((await res.json()) as { stat: string }).stat).toBe("ERR_MSG_NOT_EXIST");
    expect(await accessLine(id)).toMatchObject({
      method: "GET",
      path: "/baichuan/task_get",
      stat: "ERR_MSG_NOT_EXIST",
      status: 200,
    });
  });

  it("replaces a missing or bad x-request-id with a new one (16 upper-case hex), different for each request", async () => {
    const bad = ["has space", "x".repeat(65), "semi;colon", "ünï", ""];
    const seen = new Set<string>();
    for (const value of [undefined, ...bad]) {
      const res = await fetch(`${svc.baseUrl}/healthz`, { headers: value === undefined ? {} : { "x-request-id": value } });
      const echoed = res.headers.get("x-request-id")!;
      expect(echoed).toMatch(/^[0-9A-F]{16}$/);
      expect(res.headers.get("x-reqid")).toBe(echoed);
      seen.add(echoed);
      expect(await accessLine(echoed)).toMatchObject({ path: "/healthz", stat: "OK" });
    }
    expect(seen.size).toBe(bad.length + 1);
    // The longest sane one is kept.
    const longest = "a".repeat(64);
    expect((await fetch(`${svc.baseUrl}/healthz`, { headers: { "x-request-id": longest } })).headers.get("x-request-id")).toBe(
      longest,
    );
  });

  it("logs GET /metrics itself and a plain-gRPC WatchTask stream (with its code) when it ends", async () => {
    const res = await fetch(`${svc.baseUrl}/metrics`, { headers: { "x-request-id": "scrape-1" } });
    expect(res.status).toBe(200);
    expect(await accessLine("scrape-1")).toMatchObject({ path: "/metrics", stat: "OK" });

    const { id } = await svc.bc.enqueue(HELLO, {});
    await svc.bc.wait(id);
    for await (const _ of svc.clients.grpc.watchTask({ taskId: id }, { headers: { "x-request-id": "watch-1" } })) void _;
    expect(await accessLine("watch-1")).toMatchObject({ path: "/baichuan.v1.TaskService/WatchTask", stat: "OK" });
  });

  it("hands the request id of a create (RPC, batch RPC, legacy) to the store with the task", async () => {
    const spy = vi.spyOn(storeOf(svc.bc), "createTask");
    const batchSpy = vi.spyOn(storeOf(svc.bc), "createTasks");
    try {
      const requestIdOf = (task: NewTask) => task.requestId;
      await svc.clients.grpc.createTask({ handler: HELLO, params: {} }, { headers: { "x-request-id": "create.rpc" } });
      expect(requestIdOf(spy.mock.calls.at(-1)![0])).toBe("create.rpc");

      await svc.clients.grpc.createTasks(
        { tasks: [{ handler: HELLO, params: {} }] },
        { headers: { "x-request-id": "create.batch" } },
      );
      expect(batchSpy.mock.calls.some(([, tasks]) => tasks.some((t) => requestIdOf(t) === "create.batch"))).toBe(true);

      const res = await fetch(`${svc.baseUrl}/baichuan/task_create`, {
        method: "POST",
        headers: { "x-request-id": "create.legacy" },
        body: JSON.stringify({ handler: HELLO, params: {} }),
      });
      expect(((await res.json()) as { stat: string }).stat).toBe("OK");
      expect(requestIdOf(spy.mock.calls.at(-1)![0])).toBe("create.legacy");

      // Without a header, the generated id is the one stored.
      let echoed: string | null = null;
      await svc.clients["connect-h1"].createTask(
        { handler: HELLO, params: {} },
        {
          onHeader: (h) => {
            echoed = h.get("x-request-id");
          },
        },
      );
      expect(echoed).toMatch(/^[0-9A-F]{16}$/);
      expect(requestIdOf(spy.mock.calls.at(-1)![0])).toBe(echoed);

      // The library refuses an id that is not sane.
      await expect(svc.bc.enqueue(HELLO, {}, {}, { requestId: "bad id" })).rejects.toThrow(/request_id/);
    } finally {
      spy.mockRestore();
      batchSpy.mockRestore();
    }
  });

  it("stores the creating request's id with the task (request_id) and the handler's ctx.log lines carry it", async () => {
    const handlerLine = (taskId: string) =>
      lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.msg === "inside the handler" && l.task_id === taskId);

    const { taskId } = await svc.clients.grpc.createTask({ handler: LOGS }, { headers: { "x-request-id": "trace-me.1" } });
    await svc.bc.wait(taskId, { timeoutMs: 60_000 });
    expect(await svc.redis.client.hget(keys.taskKey(taskId), "request_id")).toBe("trace-me.1");
    expect(handlerLine(taskId)).toMatchObject({ task_id: taskId, handler: LOGS, request_id: "trace-me.1" });

    const res = await fetch(`${svc.baseUrl}/baichuan/task_create`, {
      method: "POST",
      headers: { "x-request-id": "trace-legacy" },
      body: JSON.stringify({ handler: LOGS, params: {} }),
    });
    const legacyId = ((await res.json()) as { data: { task_id: string } }).data.task_id;
    await svc.bc.wait(legacyId, { timeoutMs: 60_000 });
    expect(handlerLine(legacyId)).toMatchObject({ request_id: "trace-legacy" });

    // A library create has no request id: none stored, none logged.
    const { id } = await svc.bc.enqueue(LOGS, {});
    await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(await svc.redis.client.hexists(keys.taskKey(id), "request_id")).toBe(0);
    expect(handlerLine(id)).toBeDefined();
    expect(handlerLine(id)).not.toHaveProperty("request_id");
  });
});
