/**
 * TaskService over the real listener, in every protocol: gRPC (h2c), Connect on HTTP/1.1 and
 * HTTP/2, gRPC-Web.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Task, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { codeOf, eventually, PROTOCOLS, startService, type TestService } from "./support/service.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

describe.each(PROTOCOLS)("over %s", (protocol) => {
  it("creates a task, watches it to FINISHED and reads it back", async () => {
    const client = svc.clients[protocol];
    const { taskId, deduplicated } = await client.createTask({ handler: "/demo_api/hello", params: { name: protocol } });
    expect(taskId).toMatch(/^[0-9A-F]{20}$/);
    expect(deduplicated).toBe(false);

    const seen: TaskStatus[] = [];
    let last: Task | undefined;
    for await (const { task } of client.watchTask({ taskId })) {
      seen.push(task!.status);
      last = task!;
    }
    expect(seen.at(-1)).toBe(TaskStatus.FINISHED);
    expect(last!.result?.kind.case).toBe("structValue");

    const { task } = await client.getTask({ taskId });
    expect(task!.status).toBe(TaskStatus.FINISHED);
    expect(task!.handler).toBe("/demo_api/hello");
    expect(task!.params).toEqual({ name: protocol });
    expect(task!.result?.kind.case).toBe("structValue");
    expect(task!.result?.kind.value).toMatchObject({
      fields: { message: { kind: { case: "stringValue", value: `hello, ${protocol}` } } },
    });
    expect(task!.creatorIp).toBe("127.0.0.1");
    expect(task!.worker).toMatch(/:\d+:\d+$/);
    expect(task!.createdAt).toBeDefined();
    expect(task!.startedAt).toBeDefined();
    expect(task!.endedAt).toBeDefined();
    expect(task!.cost).toBeGreaterThanOrEqual(0);
    expect(Number(task!.timeout!.seconds)).toBe(180);
  });

  it("streams QUEUED/STARTED then FAILED for a failing handler", async () => {
    const client = svc.clients[protocol];
    const { taskId } = await client.createTask({ handler: "/demo_api/fail", params: { message: "boom" } });
    const statuses: TaskStatus[] = [];
    let error = "";
    let errorCode = "";
    for await (const { task } of client.watchTask({ taskId })) {
      statuses.push(task!.status);
      error = task!.error;
      errorCode = task!.errorCode;
    }
    expect(statuses.at(-1)).toBe(TaskStatus.FAILED);
    expect(error).toBe("boom");
    expect(errorCode).toBe("ERR_SERVER_EXCEPTION");
  });

  it.each([
    ["0000000000000000FFFF"],
    ["AC3C301A7CA516EA"], // the original framework's 16-hex form: well-formed, and no task has one
    ["ac3c301a7ca516ea"],
  ])("answers NOT_FOUND for an unknown task %s on GetTask, WatchTask, CancelTask and RetryTask", async (taskId) => {
    const client = svc.clients[protocol];
    expect(await codeOf(client.getTask({ taskId }))).toBe(Code.NotFound);
    expect(
      await codeOf(
        (async () => {
          for await (const _ of client.watchTask({ taskId })) void _;
        })(),
      ),
    ).toBe(Code.NotFound);
    expect(await codeOf(client.cancelTask({ taskId }))).toBe(Code.NotFound);
    expect(await codeOf(client.retryTask({ taskId }))).toBe(Code.NotFound);
    expect((await client.deleteTask({ taskId })).deleted).toBe(false);
  });

  // Malformed ids, handlers and options (INVALID_ARGUMENT before Redis): test/unit/rpc.test.ts.
  it("answers NOT_FOUND for a well-formed handler no process serves", async () => {
    expect(await codeOf(svc.clients[protocol].createTask({ handler: "/demo_api/nope" }))).toBe(Code.NotFound);
  });
});

it("streams every state of a slow task in order: QUEUED, STARTED, FINISHED", async () => {
  const client = svc.clients.grpc;
  const { taskId } = await client.createTask({ handler: "/demo_api/sleep", params: { seconds: 0.3 } });
  const statuses: TaskStatus[] = [];
  for await (const { task } of client.watchTask({ taskId })) statuses.push(task!.status);
  // The first snapshot may already be STARTED if the worker was quicker than the watch.
  expect(statuses.slice(-2)).toEqual([TaskStatus.STARTED, TaskStatus.FINISHED]);
  expect(new Set(statuses).size).toBe(statuses.length);
});

it("never misses the terminal state: 200 instant tasks watched right after creation all end", async () => {
  const client = svc.clients["connect-h2"];
  const ends = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const { taskId } = await client.createTask({ handler: "/demo_api/echo", params: { i } });
      let last = "none";
      try {
        for await (const { task } of client.watchTask({ taskId }, { timeoutMs: 60_000 })) last = TaskStatus[task!.status];
      } catch (err) {
        const now = (await svc.bc.getTask(taskId)).status;
        return `${taskId}: last message ${last}, then ${ConnectError.from(err).code}; the task is ${now}`;
      }
      return last;
    }),
  );
  expect(ends.filter((s) => s !== "FINISHED")).toEqual([]);
  expect(await taskChannels()).toEqual([]);
});

it("a task already finished yields one terminal message and the stream ends", async () => {
  const client = svc.clients.grpc;
  const { taskId } = await client.createTask({ handler: "/demo_api/ping" });
  await svc.bc.wait(taskId);
  const messages = [];
  for await (const { task } of client.watchTask({ taskId })) messages.push(task!.status);
  expect(messages).toEqual([TaskStatus.FINISHED]);
});

it.each(PROTOCOLS)("a watcher that goes away (%s) releases its subscription on the server", async (protocol) => {
  const client = svc.clients[protocol];
  const { taskId } = await client.createTask({ handler: "/demo_api/sleep", params: { seconds: 5 } });
  const controller = new AbortController();
  const stream = client.watchTask({ taskId }, { signal: controller.signal });
  const first = await stream[Symbol.asyncIterator]().next();
  expect(first.done).toBe(false);
  expect(await taskChannels()).toHaveLength(1);
  controller.abort();
  await eventually(async () => (await taskChannels()).length === 0);
});

/** Task channels the server is subscribed to, as Redis sees them. */
async function taskChannels(): Promise<string[]> {
  return (await svc.redis.client.call("PUBSUB", "SHARDCHANNELS", "mq:events:*")) as string[];
}

describe("CreateTasks", () => {
  it.each(PROTOCOLS)("creates a batch in order over %s, refusing bad items one by one", async (protocol) => {
    const client = svc.clients[protocol];
    const { results } = await client.createTasks({
      tasks: [
        { handler: "/demo_api/echo", params: { n: 1 } },
        { handler: "not a handler" },
        { handler: "/demo_api/nope" },
        { handler: "/demo_api/echo", params: { n: 2 }, options: { unique: true } },
        { handler: "/demo_api/echo", params: { n: 2 }, options: { unique: true } },
        { handler: "/demo_api/hello", params: { name: "batch" } },
      ],
    });
    expect(results.map((r) => r.error?.code ?? "ok")).toEqual(["ok", "invalid_argument", "not_found", "ok", "ok", "ok"]);
    expect(results[1]!.error!.message).toContain("not a handler path");
    expect(results[4]!.taskId).toBe(results[3]!.taskId);
    expect(results[4]!.deduplicated).toBe(true);
    const finished = await Promise.all([0, 3, 5].map((i) => svc.bc.wait(results[i]!.taskId)));
    expect(finished.map((t) => t.result)).toEqual([{ n: 1 }, { n: 2 }, { message: "hello, batch" }]);
  });
});
