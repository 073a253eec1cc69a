/**
 * CancelTask, DeleteTask and RetryTask through the real listener, against a real redis-server:
 * what the caller gets, what watchers see, what the handler sees, and what is left in Redis.
 */
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import type { HandlerContext } from "../src/worker/handlers.js";
import { codeOf, eventually, gate, startService, type TestService } from "./support/service.js";

const HOLD = "/life/hold";
const UNTIL_ABORT = "/life/until_abort";
const FLAKY = "/life/flaky";

/** Signals seen by handlers, by task id. */
const aborted = new Map<string, string>();
const hold = gate();
let flakyRuns = 0;

const handlers = {
  [HOLD]: async () => hold.opened,
  [UNTIL_ABORT]: (_p: unknown, ctx: HandlerContext) =>
    new Promise((_resolve, reject) =>
      ctx.signal.addEventListener("abort", () => {
        aborted.set(ctx.taskId, String((ctx.signal.reason as Error)?.name));
        reject(ctx.signal.reason);
      }),
    ),
  [FLAKY]: () => {
    flakyRuns++;
    if (flakyRuns === 1) throw new Error("first run fails");
    return { run: flakyRuns };
  },
};

let worker: TestService; // runs the handlers (concurrency 1: a held task keeps the next queued)
let api: TestService; // another BaiChuan on the same Redis, without a worker: requests go here

beforeAll(async () => {
  worker = await startService({ handlers, worker: { concurrency: 1 } });
  api = await startService({ handlers, redis: worker.redis, worker: false });
});
afterAll(async () => {
  hold.open();
  await api?.close();
  await worker?.close();
});

const client = () => api.clients.grpc;

/** Every Redis key, and every member of a set, list or sorted set, that names this task. */
async function keysNaming(id: string): Promise<string[]> {
  const r = worker.redis.client;
  const found: string[] = [];
  for (const key of await r.keys("*")) {
    if (key.includes(id.slice(4))) found.push(key);
    const type = await r.type(key);
    const members =
      type === "list"
        ? await r.lrange(key, 0, -1)
        : type === "zset"
          ? await r.zrange(key, 0, -1)
          : type === "set"
            ? await r.smembers(key)
            : type === "string"
              ? [String(await r.get(key))]
              : [];
    if (members.includes(id)) found.push(`${key} (member)`);
  }
  return found;
}

async function statusesOf(taskId: string): Promise<TaskStatus[]> {
  const seen: TaskStatus[] = [];
  for await (const { task } of client().watchTask({ taskId })) seen.push(task!.status);
  return seen;
}

describe("CancelTask", () => {
  it("ends a queued task CANCELED at once, takes it out of its queue, ends its watchers; a second cancel changes nothing", async () => {
    const blocker = await worker.bc.enqueue(HOLD, {});
    await eventually(async () => (await worker.bc.getTask(blocker.id)).status === "started");
    const { taskId } = await client().createTask({ handler: HOLD, params: { n: 1 } });
    // The watcher has its first message (QUEUED) before the cancel.
    const stream = client().watchTask({ taskId })[Symbol.asyncIterator]();
    const first = await stream.next();
    const watched = (async () => {
      const seen = [first.value!.task!.status];
      for (let m = await stream.next(); !m.done; m = await stream.next()) seen.push(m.value.task!.status);
      return seen;
    })();
    expect(await worker.redis.client.lrange(keys.queueKey(HOLD), 0, -1)).toContain(taskId);

    const { task } = await client().cancelTask({ taskId });
    expect(task!.status).toBe(TaskStatus.CANCELED);
    expect(task!.errorCode).toBe("ERR_CANCELED");
    expect(task!.endedAt).toBeDefined();
    expect(await worker.redis.client.lrange(keys.queueKey(HOLD), 0, -1)).not.toContain(taskId);
    expect(await watched).toEqual([TaskStatus.QUEUED, TaskStatus.CANCELED]);
    // The task expires after its failure ttl, like a failed one.
    expect(await worker.redis.client.pttl(keys.taskKey(taskId))).toBeGreaterThan(0);

    const again = await client().cancelTask({ taskId });
    expect(again.task!.status).toBe(TaskStatus.CANCELED);
    expect(again.task!.endedAt).toEqual(task!.endedAt);
  });

  it("aborts a running handler on the process that runs it, and the task ends CANCELED", async () => {
    hold.open(); // let the held tasks go
    const { taskId } = await client().createTask({ handler: UNTIL_ABORT, params: {} });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
    const watched = statusesOf(taskId);

    const { task } = await client().cancelTask({ taskId }); // sent to the API process
    expect([TaskStatus.STARTED, TaskStatus.CANCELED]).toContain(task!.status);
    expect((await watched).at(-1)).toBe(TaskStatus.CANCELED);
    expect(aborted.get(taskId)).toBe("CancelAbort");
    const ended = (await client().getTask({ taskId })).task!;
    expect(ended.status).toBe(TaskStatus.CANCELED);
    expect(ended.attempts).toBe(1);
    expect(await worker.redis.client.zscore(keys.wipKey(UNTIL_ABORT), taskId)).toBeNull();
  });

  it("refuses a finished task (FAILED_PRECONDITION), an unknown one (NOT_FOUND) and a malformed id (INVALID_ARGUMENT)", async () => {
    const { id } = await worker.bc.enqueue("/demo_api/ping", {});
    await worker.bc.wait(id, { timeoutMs: 60_000 });
    expect(await codeOf(client().cancelTask({ taskId: id }))).toBe(Code.FailedPrecondition);
    expect((await client().getTask({ taskId: id })).task!.status).toBe(TaskStatus.FINISHED);
    expect(await codeOf(client().cancelTask({ taskId: "0000000000000000000A" }))).toBe(Code.NotFound);
    expect(await codeOf(client().cancelTask({ taskId: "../etc" }))).toBe(Code.InvalidArgument);
  });

  it("works the same over Connect (HTTP/1.1) and gRPC-Web", async () => {
    for (const protocol of ["connect-h1", "grpc-web"] as const) {
      const c = api.clients[protocol];
      const { taskId } = await c.createTask({ handler: UNTIL_ABORT, params: { protocol } });
      await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
      await c.cancelTask({ taskId });
      await eventually(async () => (await c.getTask({ taskId })).task!.status === TaskStatus.CANCELED);
    }
  });
});

describe("DeleteTask", () => {
  it("removes a queued task from every key that names it", async () => {
    const blocker = await worker.bc.enqueue(UNTIL_ABORT, {});
    await eventually(async () => (await worker.bc.getTask(blocker.id)).status === "started");
    const { taskId } = await client().createTask({ handler: UNTIL_ABORT, params: { q: 1 }, options: { unique: true } });
    expect((await keysNaming(taskId)).length).toBeGreaterThan(1); // hash, queue, unique key

    expect((await client().deleteTask({ taskId })).deleted).toBe(true);
    expect(await keysNaming(taskId)).toEqual([]);
    expect(await codeOf(client().getTask({ taskId }))).toBe(Code.NotFound);
    expect((await client().deleteTask({ taskId })).deleted).toBe(false);
    await client().deleteTask({ taskId: blocker.id });
  });

  it("stops a running handler, ends its watchers with NOT_FOUND, and its late end brings nothing back", async () => {
    const { taskId } = await client().createTask({ handler: UNTIL_ABORT, params: { d: 2 } });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
    const watching = codeOf(statusesOf(taskId));
    await eventually(
      async () =>
        ((await worker.redis.client.call("PUBSUB", "SHARDNUMSUB", keys.taskChannel(taskId))) as [string, number])[1] > 0,
    );

    expect((await client().deleteTask({ taskId })).deleted).toBe(true);
    expect(await watching).toBe(Code.NotFound);
    await eventually(() => aborted.get(taskId));
    expect(aborted.get(taskId)).toBe("CancelAbort");
    await new Promise((r) => setTimeout(r, 200)); // the worker records the end of the run
    expect(await keysNaming(taskId)).toEqual([]);
  });

  it("refuses a malformed id with INVALID_ARGUMENT", async () => {
    expect(await codeOf(client().deleteTask({ taskId: "zz" }))).toBe(Code.InvalidArgument);
  });
});

describe("RetryTask", () => {
  it("queues a failed task again; it runs and finishes, its attempts counted", async () => {
    const { taskId } = await client().createTask({ handler: FLAKY, params: {} });
    const failed = await worker.bc.wait(taskId, { timeoutMs: 60_000 });
    expect(failed.status).toBe("failed");

    const { task } = await client().retryTask({ taskId });
    expect([TaskStatus.QUEUED, TaskStatus.STARTED]).toContain(task!.status); // the worker may be quick
    expect(task!.endedAt).toBeUndefined();
    expect(task!.maxAttempts).toBe(2);
    const done = await worker.bc.wait(taskId, { timeoutMs: 60_000 });
    expect(done.status).toBe("finished");
    expect(done.result).toEqual({ run: 2 });
    expect(done.attempts).toBe(2);
    expect(await worker.redis.client.pttl(keys.taskKey(taskId))).toBeGreaterThan(0);
  });

  it("queues a canceled task again", async () => {
    const { taskId } = await client().createTask({ handler: UNTIL_ABORT, params: { r: 1 } });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
    await client().cancelTask({ taskId });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "canceled");
    await client().retryTask({ taskId });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
    expect((await worker.bc.getTask(taskId)).attempts).toBe(2);
    await client().deleteTask({ taskId });
  });

  it("refuses a task that has not ended, and a unique task whose twin is live, with FAILED_PRECONDITION", async () => {
    const { taskId } = await client().createTask({ handler: UNTIL_ABORT, params: { u: 1 }, options: { unique: true } });
    expect(await codeOf(client().retryTask({ taskId }))).toBe(Code.FailedPrecondition);
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "started");
    await client().cancelTask({ taskId });
    await eventually(async () => (await worker.bc.getTask(taskId)).status === "canceled");
    const twin = await client().createTask({ handler: UNTIL_ABORT, params: { u: 1 }, options: { unique: true } });
    expect(twin.taskId).not.toBe(taskId);
    expect(await codeOf(client().retryTask({ taskId }))).toBe(Code.FailedPrecondition);
    expect((await worker.bc.getTask(taskId)).status).toBe("canceled");
    await client().deleteTask({ taskId: twin.taskId });
    await client().deleteTask({ taskId });
  });

  it("answers NOT_FOUND for an unknown task", async () => {
    expect(await codeOf(client().retryTask({ taskId: "0000000000000000000A" }))).toBe(Code.NotFound);
  });
});
