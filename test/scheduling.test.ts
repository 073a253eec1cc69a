/**
 * Delayed tasks (delay, start_at: SCHEDULED until due, promoted by the worker's one timer per
 * handler) and priorities (high, normal, low; FIFO within each), through the real listener and a
 * real redis-server.
 */
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { InvalidArgumentError } from "../src/core/errors.js";
import * as keys from "../src/store/keys.js";
import { codeOf, eventually, gate, startService, type TestService } from "./support/service.js";
import { msFromIso } from "./support/time.js";

const ORDER = "/sched_test/order";
const ran: string[] = [];
const hold = gate();

let svc: TestService;
beforeAll(async () => {
  svc = await startService({
    handlers: {
      [ORDER]: async (params) => {
        if (params.hold) await hold.opened;
        ran.push(String(params.name));
        return null;
      },
    },
    worker: { concurrency: 1 },
  });
});
afterAll(async () => {
  hold.open();
  await svc?.close();
});

const client = () => svc.clients.grpc;
const seconds = (s: number) => ({ seconds: BigInt(Math.floor(s)), nanos: Math.round((s % 1) * 1e9) });

describe("delay and start_at", () => {
  it("keeps a delayed task SCHEDULED until due, then queues and runs it (the worker's timer, no sweep)", async () => {
    const { taskId } = await client().createTask({ handler: "/demo_api/ping", options: { delay: seconds(1) } });
    const { task } = await client().getTask({ taskId });
    expect(task!.status).toBe(TaskStatus.SCHEDULED);
    expect(task!.scheduledFor).toBeDefined();
    expect(await svc.redis.client.zscore(keys.scheduledKey("/demo_api/ping"), taskId)).not.toBeNull();

    const seen: TaskStatus[] = [];
    for await (const m of client().watchTask({ taskId })) seen.push(m.task!.status);
    expect(seen).toEqual([TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.STARTED, TaskStatus.FINISHED]);
    const done = await svc.bc.getTask(taskId);
    const waited = msFromIso(done.startedAt) - msFromIso(done.createdAt);
    expect(waited).toBeGreaterThanOrEqual(990);
    expect(waited).toBeLessThan(4000); // promoted on time (the recovery sweep would take 15 s)
    expect(msFromIso(done.enqueuedAt)).toBeGreaterThanOrEqual(msFromIso(done.createdAt) + 990);
  });

  it("runs a task due sooner than one already scheduled at its own time", async () => {
    const late = await client().createTask({ handler: "/demo_api/ping", params: { n: 1 }, options: { delay: seconds(30) } });
    const soon = await client().createTask({ handler: "/demo_api/ping", params: { n: 2 }, options: { delay: seconds(0.3) } });
    const done = await svc.bc.wait(soon.taskId, { timeoutMs: 60_000 });
    expect(done.status).toBe("finished");
    expect((await svc.bc.getTask(late.taskId)).status).toBe("scheduled");
    await client().cancelTask({ taskId: late.taskId });
  });

  it("queues at once a task whose start_at has passed", async () => {
    const { taskId } = await client().createTask({
      handler: "/demo_api/ping",
      options: { startAt: timestampFromMs(Date.now() - 60_000) },
    });
    const task = await svc.bc.getTask(taskId);
    expect(["queued", "started", "finished"]).toContain(task.status);
    expect(task.scheduledFor).toBeUndefined();
  });

  it("runs a task that became due while no worker ran, once a worker starts", async () => {
    const alone = await startService({
      redis: svc.redis,
      worker: false,
      demo: false,
      handlers: { "/sched_test/later": () => 7 },
    });
    try {
      const { id } = await alone.bc.enqueue("/sched_test/later", {}, { delay: 0.2 });
      await new Promise((r) => setTimeout(r, 400));
      expect((await alone.bc.getTask(id)).status).toBe("scheduled");
      await alone.bc.startWorker();
      expect((await alone.bc.wait(id, { timeoutMs: 60_000 })).result).toBe(7);
    } finally {
      await alone.close();
    }
  });

  it("waits quietly for a task due in a month (a timer cannot wait that long in one go)", async () => {
    const calls = async () => {
      const m = /cmdstat_evalsha:calls=(\d+)/.exec(await svc.redis.client.info("commandstats"));
      return Number(m?.[1] ?? 0);
    };
    const { taskId } = await client().createTask({
      handler: "/demo_api/ping",
      params: { far: 1 },
      options: { delay: seconds(30 * 86_400) },
    });
    const before = await calls();
    await new Promise((r) => setTimeout(r, 500));
    expect((await calls()) - before).toBeLessThan(5); // no promotion loop
    expect((await svc.bc.getTask(taskId)).status).toBe("scheduled");
    await client().deleteTask({ taskId });
  });

  it("cancels a scheduled task and lists scheduled tasks for admins", async () => {
    const { taskId } = await client().createTask({
      handler: "/demo_api/ping",
      params: { c: 1 },
      options: { delay: seconds(60) },
    });
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
    const listed = await admin.listTasks({ handler: "/demo_api/ping", status: TaskStatus.SCHEDULED });
    expect(listed.tasks.map((t) => t.id)).toContain(taskId);
    expect((await client().cancelTask({ taskId })).task!.status).toBe(TaskStatus.CANCELED);
    expect(await svc.redis.client.zscore(keys.scheduledKey("/demo_api/ping"), taskId)).toBeNull();
  });

  it.each([
    ["delay and start_at together", { delay: seconds(1), startAt: timestampFromMs(Date.now() + 1000) }],
    ["a delay over a year", { delay: seconds(366 * 86_400) }],
    ["a negative delay", { delay: { seconds: -5n, nanos: 0 } }],
    ["a start_at over a year ahead", { startAt: timestampFromMs(Date.now() + 367 * 86_400_000) }],
  ])("refuses %s with INVALID_ARGUMENT", async (_name, options) => {
    expect(await codeOf(client().createTask({ handler: "/demo_api/ping", options }))).toBe(Code.InvalidArgument);
  });
});

describe("priority", () => {
  it("takes high before normal before low, first in first out within each", async () => {
    // The only slot is held, so the rest wait in the queues.
    const { taskId: blocker } = await client().createTask({ handler: ORDER, params: { name: "blocker", hold: true } });
    await eventually(async () => (await svc.bc.getTask(blocker)).status === "started");
    const plan: Array<[string, number]> = [
      ["low-1", -1],
      ["normal-1", 0],
      ["high-1", 1],
      ["normal-2", 0],
      ["high-2", 1],
      ["low-2", -1],
    ];
    const ids: string[] = [];
    for (const [name, priority] of plan)
      ids.push((await client().createTask({ handler: ORDER, params: { name }, options: { priority } })).taskId);
    expect(await svc.redis.client.llen(`${keys.queueKey(ORDER)}:high`)).toBe(2);
    expect(await svc.redis.client.llen(`${keys.queueKey(ORDER)}:low`)).toBe(2);
    expect((await svc.bc.getTask(ids[2]!)).priority).toBe(1);

    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
    const { queues } = await admin.listQueues({});
    expect(queues.find((q) => q.handler === ORDER)!.queued).toBe(6n);
    const page = await admin.listTasks({ handler: ORDER, status: TaskStatus.QUEUED });
    expect(page.tasks.map((t) => (t.params as { name: string }).name)).toEqual([
      "high-1",
      "high-2",
      "normal-1",
      "normal-2",
      "low-1",
      "low-2",
    ]);

    hold.open();
    for (const id of ids) await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(ran).toEqual(["blocker", "high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]);
  });

  it("cancels a high-priority queued task out of its list", async () => {
    const g = gate();
    const own = await startService({
      redis: svc.redis,
      demo: false,
      worker: { concurrency: 1 },
      handlers: { "/sched_test/p": async () => g.opened },
    });
    try {
      const first = await own.bc.enqueue("/sched_test/p", { i: 0 });
      await eventually(async () => (await own.bc.getTask(first.id)).status === "started");
      const { id } = await own.bc.enqueue("/sched_test/p", { i: 1 }, { priority: 1 });
      expect((await own.bc.cancel(id)).status).toBe("canceled");
      expect(await own.redis.client.llen(`${keys.queueKey("/sched_test/p")}:high`)).toBe(0);
    } finally {
      g.open();
      await own.close();
    }
  });

  it("refuses a priority other than -1, 0 and 1 with INVALID_ARGUMENT", async () => {
    expect(await codeOf(client().createTask({ handler: ORDER, options: { priority: 2 } }))).toBe(Code.InvalidArgument);
    await expect(svc.bc.enqueue(ORDER, {}, { priority: 0.5 })).rejects.toThrow(InvalidArgumentError);
  });
});
