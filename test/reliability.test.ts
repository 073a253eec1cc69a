/**
 * Delivery guarantees inside one process tree: retries with backoff, bad params never retried,
 * queue ttl enforced by the sweep without any worker, requeue at shutdown, back-pressure.
 * (Crashes, stalls and Redis restarts with real processes: faults.test.ts.)
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Task, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { BadParamsError } from "../src/core/errors.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import { expiryKey, queueKey, scheduledKey, wipKey } from "../src/store/keys.js";
import type { Handler } from "../src/worker/handlers.js";
import type { WorkerOptions } from "../src/worker/worker.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { gate, postJson, startService, type TestService, type TestServiceOptions } from "./support/service.js";

let redis: TestRedis;
const services: TestService[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await Promise.all(services.splice(0).map((s) => s.close()));
  await redis.client.flushdb();
});
afterAll(async () => {
  await redis?.destroy();
});

async function service(handlers: Record<string, Handler>, worker: boolean | WorkerOptions, extra: TestServiceOptions = {}) {
  const svc = await startService({ redis, demo: false, handlers, worker, ...extra });
  services.push(svc);
  return svc;
}

describe("retries", () => {
  it("runs a failing task again with backoff until it succeeds; attempts and last error are visible", async () => {
    const runs: number[] = [];
    const svc = await service(
      {
        "/retry/flaky": () => {
          runs.push(Date.now());
          if (runs.length < 3) throw new Error(`flaky run ${runs.length}`);
          return "ok";
        },
      },
      { retryBaseMs: 200 },
    );
    const client = svc.clients["connect-h2"];
    const { taskId } = await client.createTask({ handler: "/retry/flaky", options: { maxAttempts: 3 } });
    const statuses: TaskStatus[] = [];
    let last: Task | undefined;
    for await (const { task } of client.watchTask({ taskId }, { timeoutMs: 60_000 })) {
      statuses.push(task!.status);
      last = task!;
    }
    expect(last!.status).toBe(TaskStatus.FINISHED);
    expect(last!.attempts).toBe(3);
    expect(last!.maxAttempts).toBe(3);
    expect(last!.lastError).toBe("flaky run 2");
    // Watchers see the retries: started, back to queued, started again (the first run may have
    // begun before the stream did).
    const joined = statuses.map((s) => TaskStatus[s]).join(",");
    expect(joined).toMatch(/STARTED,QUEUED,STARTED,FINISHED$/);
    // Exponential backoff with jitter: the first retry waits at least half of 200 ms, the second half of 400 ms.
    expect(runs[1]! - runs[0]!).toBeGreaterThanOrEqual(100);
    expect(runs[2]! - runs[1]!).toBeGreaterThanOrEqual(200);
    // The legacy view shows the same counters.
    const legacy = await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${taskId}`).then((r) => r.json() as Promise<any>);
    expect(legacy.task_info).toMatchObject({ attempts: "3", max_attempts: "3", last_error: "flaky run 2" });
    expect(await redis.client.zcard(scheduledKey("/retry/flaky"))).toBe(0);
  });

  it("fails for good when attempts run out", async () => {
    const svc = await service({ "/retry/never": () => Promise.reject(new Error("still broken")) }, { retryBaseMs: 20 });
    const { id } = await svc.bc.enqueue("/retry/never", {}, { maxAttempts: 2 });
    const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "failed", attempts: 2, errorCode: "ERR_SERVER_EXCEPTION", error: "still broken" });
  });

  it("never retries a bad-params failure", async () => {
    let runs = 0;
    const svc = await service(
      {
        "/retry/picky": () => {
          runs++;
          throw new BadParamsError("name must be a string");
        },
      },
      { retryBaseMs: 20 },
    );
    const { id } = await svc.bc.enqueue("/retry/picky", {}, { maxAttempts: 5 });
    const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "failed", attempts: 1, errorCode: "ERR_BAD_PARAMS" });
    expect(runs).toBe(1);
  });

  it("rejects max_attempts out of range with INVALID_ARGUMENT, over RPC and legacy", async () => {
    const svc = await service({ "/retry/x": () => 1 }, true);
    for (const maxAttempts of [101, 1000]) {
      const err = await svc.clients.grpc
        .createTask({ handler: "/retry/x", options: { maxAttempts } })
        .catch((e) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    }
    for (const max_attempts of [0, -1, 1.5, "two", 101]) {
      const res = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: "/retry/x", params: {}, max_attempts });
      expect(res.json.stat).toBe("ERR_BAD_PARAMS");
    }
  });
});

describe("queue ttl", () => {
  it("a task whose ttl passes while no worker runs its handler is failed as expired by the sweep", async () => {
    // The API process knows the handler (registered) but runs no worker.
    const svc = await service({ "/ttl/idle": () => 1 }, false, { sweepMs: 100 });
    const { id } = await svc.bc.enqueue("/ttl/idle", {}, { ttl: 0.3 });
    const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "failed", errorCode: "ERR_MSG_EXPIRED", attempts: 0 });
    expect(await redis.client.llen(queueKey("/ttl/idle"))).toBe(0);
    expect(await redis.client.zcard(expiryKey("/ttl/idle"))).toBe(0);
  });
});

describe("graceful shutdown", () => {
  it("puts a task whose handler outlives the grace period back at the front of its queue, attempt not counted", async () => {
    const started = gate();
    const first = await service(
      {
        "/shutdown/long": (_params, ctx) =>
          new Promise((_resolve, reject) => {
            started.open();
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
          }),
      },
      true,
    );
    const { id } = await first.bc.enqueue("/shutdown/long", {}, { maxAttempts: 1 });
    await started.opened;
    services.splice(services.indexOf(first), 1);
    await first.server.close();
    await first.bc.close(200);
    const requeued = await first.redis.client.hgetall(`mq:msg:{${id.slice(0, 4)}}${id.slice(4)}`);
    expect(requeued).toMatchObject({
      status: "queued",
      attempts: "0",
      handle_worker: "",
      last_error: "the worker shut down while running it",
    });
    expect(await redis.client.lrange(queueKey("/shutdown/long"), 0, -1)).toEqual([id]);
    expect(await redis.client.zcard(wipKey("/shutdown/long"))).toBe(0);

    // Another process with the handler runs it.
    const second = await service({ "/shutdown/long": () => "done elsewhere" }, true);
    const task = await second.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "finished", result: "done elsewhere", attempts: 1 });
  });

  it("lets running handlers finish within the grace period", async () => {
    const svc = await service(
      { "/shutdown/short": () => new Promise((r) => setTimeout(() => r("finished in time"), 300)) },
      true,
    );
    const { id } = await svc.bc.enqueue("/shutdown/short", {});
    await new Promise((r) => setTimeout(r, 50));
    services.splice(services.indexOf(svc), 1);
    await svc.server.close();
    await svc.bc.close(5000);
    const reader = await BaiChuan.connect({ redis: redis.url });
    try {
      expect(await reader.getTask(id)).toMatchObject({ status: "finished", result: "finished in time" });
    } finally {
      await reader.close();
    }
  });
});

describe("server shutdown", () => {
  it("answers requests in flight, ends watch streams with UNAVAILABLE, then closes", async () => {
    const svc = await service(
      {
        "/stop/slow": () => new Promise((r) => setTimeout(() => r({ slow: "answered" }), 300)),
        "/stop/long": (_p, ctx) =>
          new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      },
      true,
    );
    services.splice(services.indexOf(svc), 1);
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/stop/long" });
    const watch = (async () => {
      for await (const _ of svc.clients.grpc.watchTask({ taskId })) void _;
    })().then(
      () => "ended without error",
      (e) => ConnectError.from(e),
    );
    const inFlight = postJson(svc.baseUrl, "/stop/slow", {});
    await new Promise((r) => setTimeout(r, 100));
    await svc.server.close();
    expect((await inFlight).json).toEqual({ stat: "OK", slow: "answered" });
    const ended = await watch;
    expect((ended as ConnectError).code).toBe(Code.Unavailable);
    expect((ended as ConnectError).rawMessage).toContain("shutting down");
    await expect(fetch(`${svc.baseUrl}/healthz`)).rejects.toThrow();
    await svc.bc.close(100);
  });
});

describe("back-pressure", () => {
  it("answers RESOURCE_EXHAUSTED (legacy ERR_QUEUE_FULL) once a queue holds max_queued tasks, storing nothing", async () => {
    const svc = await service({ "/bp/slow": () => 1 }, false, { limits: { maxQueued: 3 } });
    for (let i = 0; i < 3; i++) await svc.clients.grpc.createTask({ handler: "/bp/slow", params: { i } });
    const keysBefore = (await redis.client.keys("*")).sort();
    const err = await svc.clients["connect-h1"].createTask({ handler: "/bp/slow" }).catch((e) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((err as ConnectError).rawMessage).toContain("holds 3 tasks");
    const legacy = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: "/bp/slow", params: {} });
    expect(legacy.json.stat).toBe("ERR_QUEUE_FULL");
    expect((await redis.client.keys("*")).sort()).toEqual(keysBefore);
    expect(await redis.client.llen(queueKey("/bp/slow"))).toBe(3);
  });
});
