/**
 * Idempotent creates: a create with an idempotency key answers the same task id when it is sent
 * again (the first call succeeded, timed out or answered UNAVAILABLE), refuses the key with another
 * handler or other params, and survives a real `CLIENT PAUSE` of Redis with the typed client's
 * retries: exactly one task per key, run once.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTaskClient } from "../src/client.js";
import * as keys from "../src/store/keys.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually, failureOf, postJson, startService, type TestService } from "./support/service.js";

const ECHO = "/demo_api/echo";
const PING = "/demo_api/ping";

/** Task keys in Redis (every task of every handler). */
async function taskCount(redis: TestRedis): Promise<number> {
  return (await redis.client.keys("mq:msg:*")).length;
}

describe("idempotency keys (no worker: tasks stay queued)", () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService({ worker: false });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it("answers the same id for the same key, handler and params, over every path", async () => {
    const client = svc.clients["connect-h2"];
    const first = await client.createTask({ handler: ECHO, params: { a: 1, b: [2] }, idempotencyKey: "rpc-1" });
    expect(first).toMatchObject({ deduplicated: false, replayed: false });
    const before = await taskCount(svc.redis);
    // Same params in another key order: the same params.
    const again = await client.createTask({ handler: ECHO, params: { b: [2], a: 1 }, idempotencyKey: "rpc-1" });
    expect(again).toMatchObject({ taskId: first.taskId, deduplicated: false, replayed: true });
    expect(await taskCount(svc.redis)).toBe(before);

    // Legacy: the body field, or the Idempotency-Key header.
    const viaBody = await postJson(svc.baseUrl, "/baichuan/task_create", {
      handler: ECHO,
      params: { a: 1, b: [2] },
      idempotency_key: "rpc-1",
    });
    expect(viaBody.json).toEqual({ stat: "OK", data: { task_id: first.taskId, replayed: true } });
    const res = await fetch(`${svc.baseUrl}/baichuan/task_create`, {
      method: "POST",
      headers: { "idempotency-key": "legacy-1" },
      body: JSON.stringify({ handler: ECHO, params: { x: 1 } }),
    });
    const created = (await res.json()) as { stat: string; data: { task_id: string } };
    expect(created).toEqual({ stat: "OK", data: { task_id: expect.any(String) } });
    const viaRpc = await client.createTask({ handler: ECHO, params: { x: 1 }, idempotencyKey: "legacy-1" });
    expect(viaRpc).toMatchObject({ taskId: created.data.task_id, replayed: true });

    // The library.
    const lib = await svc.bc.enqueue(ECHO, { x: 1 }, { idempotencyKey: "legacy-1" });
    expect(lib).toEqual({ id: created.data.task_id, deduplicated: false, replayed: true });
    expect(await taskCount(svc.redis)).toBe(before + 1);
  });

  it("refuses the same key with another handler or other params: ALREADY_EXISTS naming the key", async () => {
    const client = svc.clients.grpc;
    const { taskId } = await client.createTask({ handler: ECHO, params: { n: 1 }, idempotencyKey: "order-42" });
    const before = await taskCount(svc.redis);
    for (const req of [
      { handler: PING, params: { n: 1 } }, // another handler (another slot, another claim)
      { handler: ECHO, params: { n: 2 } }, // other params
    ]) {
      const [code, message] = await failureOf(client.createTask({ ...req, idempotencyKey: "order-42" }));
      expect(code).toBe(Code.AlreadyExists);
      expect(message).toContain('"order-42"');
    }
    const legacy = await postJson(svc.baseUrl, "/baichuan/task_create", {
      handler: PING,
      params: { n: 1 },
      idempotency_key: "order-42",
    });
    expect(legacy.json.stat).toBe("ERR_IDEMPOTENCY_KEY_REUSED");
    expect(legacy.json.error).toContain('"order-42"');
    expect(await taskCount(svc.redis)).toBe(before);
    // The first create is still answered.
    expect((await client.createTask({ handler: ECHO, params: { n: 1 }, idempotencyKey: "order-42" })).taskId).toBe(taskId);
  });

  it("CreateTasks: each item by its own key, in order; the same batch again answers the same ids", async () => {
    const client = svc.clients["connect-h1"];
    const batch = {
      tasks: [
        { handler: ECHO, params: { i: 1 }, idempotencyKey: "batch-1" },
        { handler: ECHO, params: { i: 1 }, idempotencyKey: "batch-1" }, // the same again, in one call
        { handler: PING, params: {}, idempotencyKey: "batch-2" },
        { handler: PING, params: {}, idempotencyKey: "batch-1" }, // batch-1 belongs to ECHO
      ],
    };
    const before = await taskCount(svc.redis);
    const { results } = await client.createTasks(batch);
    expect(results.map((r) => [r.replayed, r.error?.code ?? ""])).toEqual([
      [false, ""],
      [true, ""],
      [false, ""],
      [false, "already_exists"],
    ]);
    expect(results[1]!.taskId).toBe(results[0]!.taskId);
    expect(await taskCount(svc.redis)).toBe(before + 2);
    const again = await client.createTasks(batch);
    expect(again.results.map((r) => r.taskId)).toEqual(results.map((r) => r.taskId));
    expect(again.results.slice(0, 3).every((r) => r.replayed)).toBe(true);
    expect(await taskCount(svc.redis)).toBe(before + 2);
    // The library's bulk form takes the same option.
    const lib = await svc.bc.enqueueMany([{ handler: PING, params: {}, options: { idempotencyKey: "batch-2" } }]);
    expect(lib).toEqual([{ id: results[2]!.taskId, deduplicated: false, replayed: true }]);
  });

  it("with unique: the key remembers the twin it was answered with, even after the twin ended", async () => {
    const client = svc.clients.grpc;
    const params = { u: "twin" };
    const twin = await client.createTask({ handler: ECHO, params, options: { unique: true } });
    const keyed = await client.createTask({ handler: ECHO, params, options: { unique: true }, idempotencyKey: "u-1" });
    expect(keyed).toMatchObject({ taskId: twin.taskId, deduplicated: true, replayed: false });
    await client.cancelTask({ taskId: twin.taskId });
    // Without the key, unique makes a new task now; with it, the answer stays the same.
    const replay = await client.createTask({ handler: ECHO, params, options: { unique: true }, idempotencyKey: "u-1" });
    expect(replay).toMatchObject({ taskId: twin.taskId, deduplicated: true, replayed: true });
    const fresh = await client.createTask({ handler: ECHO, params, options: { unique: true } });
    expect(fresh.taskId).not.toBe(twin.taskId);
    // A new key with unique finds the new live twin.
    const other = await client.createTask({ handler: ECHO, params, options: { unique: true }, idempotencyKey: "u-2" });
    expect(other).toMatchObject({ taskId: fresh.taskId, deduplicated: true, replayed: false });
  });

  it("refuses malformed keys with INVALID_ARGUMENT and writes nothing", async () => {
    const before = (await svc.redis.client.keys("*")).sort();
    for (const key of ["x".repeat(129), " padded", "padded ", "new\nline", "中文", "tab\there"]) {
      const [code, message] = await failureOf(svc.clients.grpc.createTask({ handler: ECHO, idempotencyKey: key }));
      expect(code, JSON.stringify(key)).toBe(Code.InvalidArgument);
      expect(message).toMatch(/^idempotency_key: /);
    }
    const legacy = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: ECHO, idempotency_key: 42 });
    expect(legacy.json).toMatchObject({ stat: "ERR_BAD_PARAMS", error: "idempotency_key: must be a string, got number" });
    const both = await fetch(`${svc.baseUrl}/baichuan/task_create`, {
      method: "POST",
      headers: { "idempotency-key": "a" },
      body: JSON.stringify({ handler: ECHO, idempotency_key: "b" }),
    });
    expect(await both.json()).toMatchObject({ stat: "ERR_BAD_PARAMS" });
    expect((await svc.redis.client.keys("*")).sort()).toEqual(before);
    // The longest key is fine.
    await svc.clients.grpc.createTask({ handler: ECHO, idempotencyKey: "k".repeat(128) });
  });
});

describe("the idempotency TTL", () => {
  it("forgets a key after it (here 1 s): the key then makes a new task", async () => {
    const svc = await startService({ worker: false, idempotencyTtl: 1 });
    try {
      const first = await svc.bc.enqueue(ECHO, { t: 1 }, { idempotencyKey: "short" });
      expect(await svc.redis.client.ttl(keys.idempotencyRecordKey(ECHO, "short"))).toBe(1);
      expect(await svc.redis.client.ttl(keys.idempotencyClaimKey("short"))).toBe(1);
      await eventually(async () => (await svc.redis.client.exists(keys.idempotencyRecordKey(ECHO, "short"))) === 0, 10_000);
      await eventually(async () => (await svc.redis.client.exists(keys.idempotencyClaimKey("short"))) === 0, 10_000);
      const second = await svc.bc.enqueue(PING, {}, { idempotencyKey: "short" });
      expect(second.replayed).toBe(false);
      expect(second.id).not.toBe(first.id);
    } finally {
      await svc.close();
    }
  });

  it("is 1 day by default", async () => {
    const svc = await startService({ worker: false });
    try {
      await svc.bc.enqueue(ECHO, {}, { idempotencyKey: "day" });
      const ttl = await svc.redis.client.ttl(keys.idempotencyRecordKey(ECHO, "day"));
      expect(ttl).toBeGreaterThan(86_300);
      expect(ttl).toBeLessThanOrEqual(86_400);
    } finally {
      await svc.close();
    }
  });
});

describe("retries while Redis pauses writes (CLIENT PAUSE ... WRITE, socket_timeout 1 s)", () => {
  let redis: TestRedis;
  let svc: TestService;
  const ran: string[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    svc = await startService({
      redis: { ...redis, url: `${redis.url}?socket_timeout=1` },
      handlers: {
        "/idem/run": (p, ctx) => {
          ran.push(ctx.taskId);
          return p;
        },
      },
    });
  });
  afterAll(async () => {
    await svc?.close();
    await redis?.destroy();
  });

  it("the typed client retries keyed creates answered UNAVAILABLE: one task per key, each run once", async () => {
    let attempts = 0;
    let unavailable = 0;
    const count: Interceptor = (next) => async (req) => {
      attempts++;
      try {
        return await next(req);
      } catch (err) {
        if (ConnectError.from(err).code === Code.Unavailable) unavailable++;
        throw err;
      }
    };
    const client = createTaskClient(svc.baseUrl, { interceptors: [count], createRetries: 8 });
    await client.createTask({ handler: "/idem/run", params: { warm: true } }); // the queue is registered
    await redis.client.call("CLIENT", "PAUSE", "3000", "WRITE");
    const created = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        client.createTask({ handler: "/idem/run", params: { i }, idempotencyKey: `pause-${i}` }),
      ),
    );
    expect(unavailable).toBeGreaterThanOrEqual(16); // every first attempt timed out
    expect(attempts).toBeGreaterThan(16 + 16);
    const ids = created.map((c) => c.taskId);
    expect(new Set(ids).size).toBe(16);
    // Exactly one task per key, and each runs once.
    for (const id of ids) {
      const task = await svc.bc.wait(id, { timeoutMs: 20_000 });
      expect(task.status).toBe("finished");
      expect(task.attempts).toBe(1);
    }
    expect(await taskCount(redis)).toBe(17);
    expect(ran.filter((id) => ids.includes(id)).sort()).toEqual([...ids].sort());
    console.log(
      `[figures] CLIENT PAUSE 3000 WRITE, socket_timeout 1 s: 16 keyed creates, ${attempts - 16} attempts, ${unavailable} UNAVAILABLE, 16 tasks, each run once`,
    );
  }, 60_000);

  it("a create that reached Redis but whose answer was lost is answered again, not made twice", async () => {
    const client = svc.clients.grpc; // no retries of its own
    const req = { handler: "/idem/run", params: { lost: 1 }, idempotencyKey: "lost-reply" };
    // 1. The key's claim is paused (the call times out): the claim is made when the pause ends.
    await redis.client.call("CLIENT", "PAUSE", "2500", "WRITE");
    const [code1, message1] = await failureOf(client.createTask(req));
    expect(code1).toBe(Code.Unavailable);
    expect(message1).toBe("Redis is unavailable (no answer within 1000 ms)");
    await eventually(async () => (await redis.client.exists(keys.idempotencyClaimKey("lost-reply"))) === 1, 10_000);
    expect(await redis.client.exists(keys.idempotencyRecordKey(req.handler, req.idempotencyKey))).toBe(0);
    // 2. Again, paused: the claim is there (read, not paused), the create is sent and paused; it
    //    runs when the pause ends, after the caller was told UNAVAILABLE.
    const before = await taskCount(redis);
    await redis.client.call("CLIENT", "PAUSE", "2500", "WRITE");
    const [code2, message2] = await failureOf(client.createTask(req));
    expect(code2).toBe(Code.Unavailable);
    expect(message2).toBe(
      "Redis is unavailable (no answer within 1000 ms): the task may have been created: retry with the same idempotency key to be safe",
    );
    await eventually(async () => (await taskCount(redis)) === before + 1, 10_000);
    // 3. The retry gets that task, and nothing new is created.
    const again = await client.createTask(req);
    expect(again.replayed).toBe(true);
    const task = await svc.bc.wait(again.taskId, { timeoutMs: 20_000 });
    expect(task.status).toBe("finished");
    expect(await taskCount(redis)).toBe(before + 1);
    expect(ran.filter((id) => id === again.taskId)).toHaveLength(1);
    // Without a key, the same failure says a retry may duplicate.
    await redis.client.call("CLIENT", "PAUSE", "2500", "WRITE");
    const [, message3] = await failureOf(client.createTask({ handler: "/idem/run", params: { nokey: 1 } }));
    expect(message3).toBe(
      "Redis is unavailable (no answer within 1000 ms): the task may have been created: a retry without an idempotency key may create it twice",
    );
    await eventually(async () => (await taskCount(redis)) === before + 2, 10_000); // it was created
  }, 60_000);
});
