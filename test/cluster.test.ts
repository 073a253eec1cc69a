/**
 * The core paths on a real Redis Cluster (3 masters, 3 replicas, started by the test): create,
 * watch, get over the listener, batches across slots, the task lifecycle, delays and priorities, the
 * admin listings, the recovery sweep. Every script carries `#!lua`, so Redis refuses any access
 * outside the slot of its declared keys: these paths passing here is the proof that each script
 * touches one slot (and never a global key).
 */
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import { startCluster, type TestCluster } from "./support/cluster.js";
import type { TestRedis } from "./support/redis.js";
import { codeOf, eventually, gate, PROTOCOLS, startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";
import { msFromIso } from "./support/time.js";

const HANDLERS = Array.from({ length: 30 }, (_, i) => `/cluster_test/h${i}`);
const hold = gate();

let cluster: TestCluster;
let svc: TestService;

beforeAll(async () => {
  cluster = await startCluster();
  const handlers: Record<string, (p: Record<string, unknown>) => unknown> = { "/cluster_test/hold": () => hold.opened };
  for (const h of HANDLERS) handlers[h] = (p) => ({ echo: p.n ?? null, by: h });
  // The service gets the cluster's URL; the cluster is the test's to stop.
  const redis = { url: cluster.url } as TestRedis;
  svc = await startService({ redis, handlers, worker: { concurrency: 20, leaseMs: 1000 }, sweepMs: 200, scheduler: true });
});
afterAll(async () => {
  hold.open();
  await svc?.close();
  await cluster?.destroy();
});

describe("on a 3-master Redis Cluster", () => {
  it("spreads the handlers over every master (their hash tags)", () => {
    const masters = new Set(HANDLERS.map((h) => cluster.masterOf(keys.keySlot(keys.queueKey(h)))));
    expect(masters.size).toBe(3);
  });

  it("refuses a script that reaches outside its slot, even on the same node (the check our scripts pass)", async () => {
    const declared = keys.queueKey(HANDLERS[0]!);
    const node = cluster.masterOf(keys.keySlot(declared));
    const other = HANDLERS.map(keys.queueKey).find(
      (k) => keys.keySlot(k) !== keys.keySlot(declared) && cluster.masterOf(keys.keySlot(k)) === node,
    )!;
    expect(other).toBeDefined();
    await expect(cluster.client.eval("#!lua\nreturn redis.call('LLEN', ARGV[1])", 1, declared, other)).rejects.toThrow(
      /same slot/,
    );
  });

  it.each(PROTOCOLS)("creates, watches to FINISHED and reads tasks of every handler over %s", async (protocol) => {
    const client = svc.clients[protocol];
    const ids = await Promise.all(
      HANDLERS.map(async (handler, n) => (await client.createTask({ handler, params: { n } })).taskId),
    );
    const ends = await Promise.all(
      ids.map(async (taskId) => {
        let last: TaskStatus | undefined;
        for await (const { task } of client.watchTask({ taskId })) last = task!.status;
        return last;
      }),
    );
    expect(ends.every((s) => s === TaskStatus.FINISHED)).toBe(true);
    const { task } = await client.getTask({ taskId: ids[7]! });
    expect(task!.status).toBe(TaskStatus.FINISHED);
    expect((await svc.bc.getTask(ids[7]!)).result).toEqual({ echo: 7, by: HANDLERS[7] });
  });

  it("creates a batch across all slots in one CreateTasks call, per-item results in order", async () => {
    const { results } = await svc.clients.grpc.createTasks({
      tasks: [...HANDLERS.map((handler, n) => ({ handler, params: { n } })), { handler: "bad name", params: {} }],
    });
    expect(results).toHaveLength(HANDLERS.length + 1);
    expect(results.at(-1)!.error?.code).toBe("invalid_argument");
    const ids = results.slice(0, -1).map((r) => r.taskId);
    const done = await Promise.all(ids.map((id) => svc.bc.wait(id, { timeoutMs: 60_000 })));
    expect(done.map((t) => t.result)).toEqual(HANDLERS.map((h, n) => ({ echo: n, by: h })));
  });

  it("idempotency keys: the same answer for the same handler and params, ALREADY_EXISTS across handlers on other masters", async () => {
    const client = svc.clients.grpc;
    // Two handlers on different masters, and keys whose claims live on yet other slots.
    const [a, b] = [
      HANDLERS[0]!,
      HANDLERS.find(
        (h) => cluster.masterOf(keys.keySlot(keys.queueKey(h))) !== cluster.masterOf(keys.keySlot(keys.queueKey(HANDLERS[0]!))),
      )!,
    ];
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const key = `cluster-key-${i}`;
      const first = await client.createTask({ handler: a, params: { n: i }, idempotencyKey: key });
      const again = await client.createTask({ handler: a, params: { n: i }, idempotencyKey: key });
      expect(again).toMatchObject({ taskId: first.taskId, replayed: true });
      expect(await codeOf(client.createTask({ handler: b, params: { n: i }, idempotencyKey: key }))).toBe(Code.AlreadyExists);
      ids.push(first.taskId);
    }
    // The claims are spread over the masters: a key's claim is not on its handler's slot.
    const claimMasters = new Set(ids.map((_, i) => cluster.masterOf(keys.keySlot(keys.idempotencyClaimKey(`cluster-key-${i}`)))));
    expect(claimMasters.size).toBeGreaterThan(1);
    const { results } = await client.createTasks({
      tasks: ids.map((_, i) => ({ handler: a, params: { n: i }, idempotencyKey: `cluster-key-${i}` })),
    });
    expect(results.map((r) => r.taskId)).toEqual(ids);
    expect(results.every((r) => r.replayed)).toBe(true);
  });

  it("cancels, deletes, retries, delays and prioritises", async () => {
    const c = svc.clients.grpc;
    // Held: the worker's slots fill with /cluster_test/hold tasks, queued ones wait behind.
    const held = await Promise.all(Array.from({ length: 22 }, () => c.createTask({ handler: "/cluster_test/hold" })));
    await eventually(async () => (await svc.bc.getTask(held[19]!.taskId)).status === "started");
    const queued = held[21]!.taskId;
    expect((await c.cancelTask({ taskId: queued })).task!.status).toBe(TaskStatus.CANCELED);
    expect((await c.retryTask({ taskId: queued })).task!.status).toBe(TaskStatus.QUEUED);
    expect((await c.deleteTask({ taskId: held[20]!.taskId })).deleted).toBe(true);
    const high = await c.createTask({ handler: "/cluster_test/hold", options: { priority: 1 } });
    expect(await cluster.client.llen(`${keys.queueKey("/cluster_test/hold")}:high`)).toBe(1);
    const running = held[0]!.taskId;
    await c.cancelTask({ taskId: running }); // on the worker, through the wake channel of its shard
    await eventually(async () => (await svc.bc.getTask(running)).status === "canceled");
    const delayed = await c.createTask({
      handler: HANDLERS[3]!,
      params: { n: 3 },
      options: { delay: { seconds: 0n, nanos: 300_000_000 } },
    });
    expect((await svc.bc.getTask(delayed.taskId)).status).toBe("scheduled");
    // Promoted on time to its queue (every slot is held, so it waits there).
    await eventually(async () => (await svc.bc.getTask(delayed.taskId)).status === "queued", 60_000);
    hold.open();
    for (const id of [high.taskId, queued, delayed.taskId]) {
      expect((await svc.bc.wait(id, { timeoutMs: 60_000 })).status).toBe("finished");
    }
  });

  it("lists queues, workers and ended tasks for admins (a SCAN on the master of the handler's slot)", async () => {
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
    const { queues } = await admin.listQueues({});
    expect(queues.find((q) => q.handler === HANDLERS[5])!.finishedTotal).toBeGreaterThanOrEqual(2n);
    expect((await admin.listWorkers({})).workers).toHaveLength(1);
    const found: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listTasks({ handler: HANDLERS[5]!, status: TaskStatus.FINISHED, pageSize: 1, pageToken });
      found.push(...page.tasks.map((t) => t.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(found.length).toBeGreaterThanOrEqual(2);
    for (const id of found) expect(id.slice(0, 4)).toBe(keys.handlerTag(HANDLERS[5]!));
    expect(await codeOf(admin.listTasks({ handler: HANDLERS[5]!, status: TaskStatus.FINISHED, pageToken: "x:1" }))).toBe(
      Code.InvalidArgument,
    );
  });

  it("writes and reads the per-minute series in each handler's slot (GetQueueSeries, on every master)", async () => {
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
    // Every handler of the batch test finished runs: their series sit on all three masters.
    const totals = await Promise.all(
      HANDLERS.map(async (handler) => {
        const { points } = await admin.getQueueSeries({ handler, minutes: 30 });
        expect(points).toHaveLength(30);
        return points.reduce((n, p) => n + Number(p.finished), 0);
      }),
    );
    const { queues } = await admin.listQueues({});
    HANDLERS.forEach((handler, i) => {
      expect(totals[i], handler).toBe(Number(queues.find((q) => q.handler === handler)!.finishedTotal));
    });
    expect(totals.every((n) => n > 0)).toBe(true);
  });

  it("recovers a task whose lease lapsed (the sweep, per handler, across shards)", async () => {
    // A started task of a handler no process runs, with a lease already over: the sweep takes it back.
    const H = "/cluster_test/orphan";
    const { id } = await svc.bc.enqueue(H, {}, { maxAttempts: 1 });
    await storeOf(svc.bc).fetchTasks(H, 1, "gone:1:1", 1);
    await eventually(async () => (await svc.bc.getTask(id)).status === "failed", 60_000);
    expect((await svc.bc.getTask(id)).errorCode).toBe("ERR_WORKER_LOST");
  });

  it("runs a schedule: its scripts in the schedules' slot, its tasks in their handler's slot on another master", async () => {
    const handler = HANDLERS.find(
      (h) => cluster.masterOf(keys.keySlot(keys.queueKey(h))) !== cluster.masterOf(keys.keySlot(keys.SCHEDULES_DUE_KEY)),
    )!;
    const created = await svc.bc.schedules.create({ id: "cluster-every", handler, params: { n: 7 }, every: 1 });
    const seen = new Set<string>();
    await eventually(async () => {
      const s = await svc.bc.schedules.get("cluster-every");
      if (s.lastTaskId) seen.add(s.lastTaskId);
      return seen.size >= 2 && s.lastTaskStatus === "finished";
    }, 60_000);
    for (const id of seen) {
      const task = await svc.bc.getTask(id);
      expect(task.scheduleId).toBe("cluster-every");
      expect((msFromIso(task.scheduleTick) - created.createdMs) % 1000).toBe(0);
      expect(task.result).toEqual({ echo: 7, by: handler });
    }
    expect((await svc.bc.schedules.list()).map((s) => s.id)).toContain("cluster-every");
    expect(await svc.bc.schedules.delete("cluster-every")).toBe(true);
  });
});
