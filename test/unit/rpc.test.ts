/**
 * The RPC layer without Redis: the real TaskService implementation (api/task-service.ts) behind the
 * error interceptor (api/errors.ts), as server.ts wires them, called in memory through Connect's
 * router transport.
 *
 * - With a real BaiChuan that never connects: every request that is malformed or not allowed is
 *   refused before anything reaches Redis (one that got that far would answer UNAVAILABLE, the
 *   unit tier's guard refusing the connection).
 * - With a stand-in BaiChuan whose operations throw: every domain error reaches the caller as its
 *   Connect code, on unary calls and mid-stream alike, and an unexpected error is INTERNAL "internal
 *   error", its text and stack only in the log.
 *
 * rpc.test.ts, security.test.ts and limits.test.ts check the same answers over the four protocols
 * against a real service.
 */
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { afterAll, describe, expect, it } from "vitest";
import { CreateTaskRequestSchema, TaskService, TaskStatus } from "../../gen/baichuan/v1/task_pb.js";
import { errorInterceptor } from "../../src/api/errors.js";
import { type ServiceContext, taskServiceRoutes } from "../../src/api/task-service.js";
import { Authenticator } from "../../src/core/auth.js";
import type { Task } from "../../src/core/domain.js";
import {
  FailedPreconditionError,
  HandlerNotFoundError,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
  LimitError,
  PermissionDeniedError,
  QueueFullError,
  RedisFullError,
  ServerShuttingDownError,
  StoreUnavailableError,
  TaskNotFoundError,
  UnauthenticatedError,
  WaitTimeoutError,
} from "../../src/core/errors.js";
import { BaiChuan } from "../../src/engine/baichuan.js";
import { createLogger } from "../../src/ops/log.js";
import { failureOf } from "../support/connect.js";

const FULL = "full-access-token-0123456789";
const PING_ONLY = "ping-only-token-0123456789";
const WELL_FORMED_ID = "AC3C301A7CA516EAF0F1";

/** A TaskService client over an in-memory router, wired as server.ts wires the real one. */
function serviceClient(
  bc: BaiChuan,
  options: { tokens?: string[]; maxWatchers?: number; maxWatchersPerConnection?: number; log?: string[] } = {},
): Client<typeof TaskService> {
  const context: ServiceContext = {
    limits: { maxWatchers: options.maxWatchers ?? 100, maxWatchersPerConnection: options.maxWatchersPerConnection ?? 100 },
    auth: new Authenticator(options.tokens ?? []),
    shutdown: new AbortController().signal,
  };
  const log = createLogger("debug", {}, (line) => void options.log?.push(line));
  const transport = createRouterTransport(taskServiceRoutes(bc, context), { router: { interceptors: [errorInterceptor(log)] } });
  return createClient(TaskService, transport);
}

/** Drain a WatchTask stream; resolves with the statuses it delivered. */
async function drain(stream: AsyncIterable<{ task?: { status: TaskStatus } | undefined }>): Promise<TaskStatus[]> {
  const statuses: TaskStatus[] = [];
  for await (const { task } of stream) statuses.push(task!.status);
  return statuses;
}

// A BaiChuan that is never connected: `new` does not connect, and nothing here may reach Redis.
const offline = new BaiChuan({ redis: "redis://127.0.0.1:1/0", limits: { maxParamsBytes: 200, maxParamsDepth: 3 } });
offline.register("/demo_api/ping", () => "pong");
afterAll(async () => {
  await offline.close();
});

describe("refused before Redis, with INVALID_ARGUMENT naming the field", () => {
  const client = serviceClient(offline);

  it.each([
    ["an empty handler", "", "handler: is required"],
    ["no leading slash", "demo_api/ping", "is not a handler path"],
    ["a space", "demo_api ping", "is not a handler path"],
    ["three segments", "/a/b/c", "is not a handler path"],
    ["a handler over the length limit", `/demo_api/${"p".repeat(200)}`, "characters long; the limit is 128"],
  ])("CreateTask with %s", async (_case, handler, message) => {
    const [code, text] = await failureOf(client.createTask({ handler }));
    expect(code).toBe(Code.InvalidArgument);
    expect(text).toContain(message);
  });

  it.each([
    ["params over the size limit", { params: { s: "x".repeat(300) } }, "params: is 308 bytes as JSON; the limit is 200"],
    ["params too deep", { params: { a: { b: { c: {} } } } }, "params: is nested deeper than 3 levels"],
    ["a timeout of -1 s", { options: { timeout: durationFromMs(-1000) } }, "timeout: must be at least 0.001 seconds"],
    ["a timeout over 7 days", { options: { timeout: durationFromMs(8 * 86_400_000) } }, "timeout: must be at most 604800"],
    [
      "a result_ttl of 0",
      { options: { resultTtl: durationFromMs(0) } },
      "result_ttl: must be at least 0.001 seconds (1 ms), got 0",
    ],
    ["max_attempts 101", { options: { maxAttempts: 101 } }, "max_attempts: must be a whole number from 1 to 100"],
    ["priority 2", { options: { priority: 2 } }, "priority: must be 1 (high), 0 (normal) or -1 (low)"],
    [
      "a delay and a start time",
      { options: { delay: durationFromMs(1000), startAt: timestampFromMs(Date.now() + 60_000) } },
      "delay: give delay or start_at, not both",
    ],
    ["an idempotency key with a space at the end", { idempotencyKey: "key " }, "idempotency_key: must be printable ASCII"],
    ["an idempotency key of 129 characters", { idempotencyKey: "k".repeat(129) }, "idempotency_key: must be 1 to 128"],
  ])("CreateTask with %s", async (_case, fields, message) => {
    const req = create(CreateTaskRequestSchema, { handler: "/demo_api/ping", ...fields });
    const [code, text] = await failureOf(client.createTask(req));
    expect(code).toBe(Code.InvalidArgument);
    expect(text).toContain(message);
  });

  it.each([["AC3C301A7CA516E"], ["AC3C301A7CA516EAF"], ["nope"], [""], ["0000ABCDEF0123456789FF"]])(
    "a malformed task id %j on GetTask, CancelTask, DeleteTask, RetryTask and WatchTask",
    async (taskId) => {
      for (const call of [
        client.getTask({ taskId }),
        client.cancelTask({ taskId }),
        client.deleteTask({ taskId }),
        client.retryTask({ taskId }),
        drain(client.watchTask({ taskId })),
      ]) {
        const [code, text] = await failureOf(call);
        expect(code).toBe(Code.InvalidArgument);
        expect(text).toMatch(/^task_id: /);
      }
    },
  );

  it("CreateTasks refuses more than 10,000 items as a whole", async () => {
    const tasks = Array.from({ length: 10_001 }, () => ({ handler: "/demo_api/ping" }));
    const [code, text] = await failureOf(client.createTasks({ tasks }));
    expect(code).toBe(Code.InvalidArgument);
    expect(text).toBe("tasks: holds 10001 items; the limit is 10000");
  });

  it("CreateTasks answers each bad item with its own error, in order", async () => {
    const { results } = await client.createTasks({
      tasks: [{ handler: "nope" }, { handler: "/demo_api/ping", options: { maxAttempts: 500 } }, { handler: "/a/b/c" }],
    });
    expect(results.map((r) => [r.error?.code, r.error?.message.split(":")[0]])).toEqual([
      ["invalid_argument", "handler"],
      ["invalid_argument", "max_attempts"],
      ["invalid_argument", "handler"],
    ]);
    expect(results.every((r) => r.taskId === "")).toBe(true);
  });

  it("the control: a well-formed request does go on to the store, which answers UNAVAILABLE here", async () => {
    // Its own instance: the store's attempt to connect (refused by the unit tier's guard) ends with it.
    const bc = new BaiChuan({ redis: "redis://127.0.0.1:1/0" });
    try {
      const [code, text] = await failureOf(serviceClient(bc).getTask({ taskId: WELL_FORMED_ID }));
      expect([code, text]).toEqual([Code.Unavailable, "Redis is unavailable (not connected)"]);
    } finally {
      await bc.close();
    }
  });
});

describe("refused before Redis, with tokens configured", () => {
  const client = serviceClient(offline, { tokens: [FULL, `${PING_ONLY}=/demo_api/ping`] });
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  it.each([
    ["no token", {}],
    ["a wrong token", bearer("not-a-real-token-000000000")],
    ["a token without the scheme", { headers: { authorization: FULL } }],
  ])("%s: UNAUTHENTICATED on every method, the token never echoed", async (_case, options) => {
    for (const call of [
      client.createTask({ handler: "/demo_api/ping" }, options),
      client.createTasks({ tasks: [{ handler: "/demo_api/ping" }] }, options),
      client.getTask({ taskId: WELL_FORMED_ID }, options),
      client.cancelTask({ taskId: WELL_FORMED_ID }, options),
      client.deleteTask({ taskId: WELL_FORMED_ID }, options),
      client.retryTask({ taskId: WELL_FORMED_ID }, options),
      drain(client.watchTask({ taskId: WELL_FORMED_ID }, options)),
    ]) {
      const [code, text] = await failureOf(call);
      expect(code).toBe(Code.Unauthenticated);
      expect(text).not.toContain("not-a-real-token");
      expect(text).not.toContain(FULL);
    }
  });

  it("a token limited to some handlers creates no task of another: PERMISSION_DENIED naming the handler", async () => {
    const [code, text] = await failureOf(client.createTask({ handler: "/demo_api/hello" }, bearer(PING_ONLY)));
    expect(code).toBe(Code.PermissionDenied);
    expect(text).toBe("this token may not use handler /demo_api/hello");
    const { results } = await client.createTasks({ tasks: [{ handler: "/demo_api/hello" }] }, bearer(PING_ONLY));
    expect(results[0]?.error).toMatchObject({ code: "permission_denied" });
  });
});

describe("WatchTask limits, before Redis", () => {
  it("no place left on the server or on the connection: RESOURCE_EXHAUSTED saying which limit", async () => {
    const full = serviceClient(offline, { maxWatchers: 0 });
    const [code, text] = await failureOf(drain(full.watchTask({ taskId: WELL_FORMED_ID })));
    expect(code).toBe(Code.ResourceExhausted);
    expect(text).toBe("this server already serves 0 WatchTask streams, its limit");
    const perConnection = serviceClient(offline, { maxWatchersPerConnection: 0 });
    const [code2, text2] = await failureOf(drain(perConnection.watchTask({ taskId: WELL_FORMED_ID })));
    expect(code2).toBe(Code.ResourceExhausted);
    expect(text2).toBe("this connection already has 0 WatchTask streams, the limit per connection");
  });
});

// ---------------------------------------------------------------------------------------------

function task(status: Task["status"]): Task {
  const now = new Date().toISOString().replace("Z", "000Z");
  return {
    id: WELL_FORMED_ID,
    handler: "/demo_api/ping",
    status,
    params: {},
    ip: "",
    createdAt: now,
    enqueuedAt: now,
    cost: 0,
    worker: "",
    timeout: 60,
    resultTtl: 3600,
    failureTtl: 86_400,
    attempts: 0,
    maxAttempts: 1,
    version: 1,
    fields: {},
  };
}

/** A BaiChuan whose every operation throws `err`; its watch yields the task QUEUED first. */
function throwing(err: unknown): BaiChuan {
  const fail = async () => {
    throw err;
  };
  return {
    enqueue: fail,
    getTask: fail,
    cancel: fail,
    delete: fail,
    retry: fail,
    async enqueueMany(items: unknown[]) {
      return items.map(() => err);
    },
    async *watch() {
      yield task("queued");
      throw err;
    },
  } as unknown as BaiChuan;
}

describe("every domain error reaches the caller as its Connect code (the error interceptor)", () => {
  it.each([
    ["InvalidArgumentError", new InvalidArgumentError("params", "bad"), Code.InvalidArgument, "params: bad"],
    ["TaskNotFoundError", new TaskNotFoundError(WELL_FORMED_ID), Code.NotFound, `task ${WELL_FORMED_ID} does not exist`],
    ["HandlerNotFoundError", new HandlerNotFoundError("/x/y"), Code.NotFound, "handler /x/y is not registered"],
    ["QueueFullError", new QueueFullError("/x/y", 5), Code.ResourceExhausted, "the queue of /x/y holds 5 tasks"],
    ["LimitError", new LimitError("max_x", "too many"), Code.ResourceExhausted, "too many"],
    ["RedisFullError", new RedisFullError(), Code.ResourceExhausted, "Redis is out of memory"],
    ["FailedPreconditionError", new FailedPreconditionError("already ended"), Code.FailedPrecondition, "already ended"],
    ["UnauthenticatedError", new UnauthenticatedError("no token"), Code.Unauthenticated, "no token"],
    ["PermissionDeniedError", new PermissionDeniedError("not yours"), Code.PermissionDenied, "not yours"],
    [
      "StoreUnavailableError",
      new StoreUnavailableError(new Error("ECONNREFUSED 10.0.0.5:6379"), { detail: "not connected" }),
      Code.Unavailable,
      "Redis is unavailable (not connected)",
    ],
    ["ServerShuttingDownError", new ServerShuttingDownError(), Code.Unavailable, "the server is shutting down"],
    [
      "IdempotencyKeyReusedError",
      new IdempotencyKeyReusedError("k1"),
      Code.AlreadyExists,
      'idempotency key "k1" was already used',
    ],
    ["WaitTimeoutError", new WaitTimeoutError(WELL_FORMED_ID, 5), Code.DeadlineExceeded, "did not end within 5 ms"],
    ["a ConnectError", new ConnectError("as thrown", Code.Aborted), Code.Aborted, "as thrown"],
  ])("%s: on unary calls, mid-stream, and per item of CreateTasks", async (_name, err, code, message) => {
    const log: string[] = [];
    const client = serviceClient(throwing(err), { log });
    for (const call of [
      client.createTask({ handler: "/demo_api/ping" }),
      client.getTask({ taskId: WELL_FORMED_ID }),
      client.cancelTask({ taskId: WELL_FORMED_ID }),
      client.deleteTask({ taskId: WELL_FORMED_ID }),
      client.retryTask({ taskId: WELL_FORMED_ID }),
    ]) {
      const [got, text] = await failureOf(call);
      expect(got).toBe(code);
      expect(text).toContain(message);
    }
    // A stream that delivered a message, then failed: the message, then the code.
    const statuses: TaskStatus[] = [];
    const [got, text] = await failureOf(
      (async () => {
        for await (const { task } of client.watchTask({ taskId: WELL_FORMED_ID })) statuses.push(task!.status);
      })(),
    );
    expect(statuses).toEqual([TaskStatus.QUEUED]);
    expect([got, text.includes(message)]).toEqual([code, true]);
    const { results } = await client.createTasks({ tasks: [{ handler: "/demo_api/ping" }] });
    expect(results[0]?.error?.code).toBe(codeToString(code));
    // Expected errors are not logged as failures (the access log has them).
    expect(log.filter((l) => l.includes('"rpc failed"'))).toEqual([]);
  });

  it("the client library's own words stay out of an UNAVAILABLE answer", async () => {
    const client = serviceClient(throwing(new StoreUnavailableError(new Error("ECONNREFUSED 10.0.0.5:6379"))));
    const [, text] = await failureOf(client.getTask({ taskId: WELL_FORMED_ID }));
    expect(text).toBe("Redis is unavailable");
  });

  it.each([
    ["an Error", new Error("secret detail at /srv/app/lib/db.js:12:5")],
    ["a TypeError", new TypeError("Cannot read properties of undefined (reading 'x')")],
    ["a string", "thrown text"],
    ["undefined", undefined],
  ])("an unexpected error (%s) is INTERNAL 'internal error'; its text and stack go to the log only", async (_case, err) => {
    const log: string[] = [];
    const client = serviceClient(throwing(err), { log });
    const unary = await failureOf(client.getTask({ taskId: WELL_FORMED_ID }));
    const stream = await failureOf(drain(client.watchTask({ taskId: WELL_FORMED_ID })));
    for (const [code, text] of [unary, stream]) {
      expect(code).toBe(Code.Internal);
      expect(text).toBe("internal error");
    }
    const logged = log.filter((l) => l.includes('"rpc failed"')).map((l) => JSON.parse(l));
    expect(logged).toHaveLength(2);
    expect(logged.map((l) => l.procedure)).toEqual([
      expect.stringMatching(/\/baichuan\.v1\.TaskService\/GetTask$/),
      expect.stringMatching(/\/baichuan\.v1\.TaskService\/WatchTask$/),
    ]);
    if (err instanceof Error) {
      expect(logged[0].error).toMatchObject({ type: err.name, message: err.message });
      expect(logged[0].error.stack).toMatch(/\n\s+at /);
    } else expect(logged[0].error).toEqual(err);
  });
});
