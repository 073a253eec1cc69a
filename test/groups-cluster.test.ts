/**
 * Concurrency keys on a real Redis Cluster (3 masters, 3 replicas): every groups script touches
 * only its handler's slot (Redis refuses anything else: the scripts carry `#!lua`), grouped tasks
 * of handlers on every master run, their per-key caps hold, and cancel, delete, EmptyQueue and the
 * listings work there. The cap is written straight into each handler's limits hash
 * (support/groups.ts) until SetQueueLimits lands.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import { startCluster, type TestCluster } from "./support/cluster.js";
import { groupKeysLeft, mostAtOnce, setMaxRunningPerKey } from "./support/groups.js";
import type { TestRedis } from "./support/redis.js";
import { eventually, gate, startService, type TestService } from "./support/service.js";

const HANDLERS = Array.from({ length: 6 }, (_, i) => `/groups_cluster/h${i}`);
const HOLD = "/groups_cluster/hold";
const KEYS = ["p", "q", "r"];
const hold = gate();

let cluster: TestCluster;
let svc: TestService;

beforeAll(async () => {
  cluster = await startCluster();
  const handlers: Record<string, (p: Record<string, unknown>) => unknown> = {
    [HOLD]: () => hold.opened,
  };
  for (const h of HANDLERS) handlers[h] = (p) => new Promise((resolve) => setTimeout(() => resolve(p), 5));
  svc = await startService({
    redis: { url: cluster.url } as TestRedis,
    handlers,
    demo: false,
    worker: { concurrency: 20, leaseMs: 1000 },
    sweepMs: 200,
  });
});
afterAll(async () => {
  hold.open();
  await svc?.close();
  await cluster?.destroy();
});

describe("concurrency keys on a 3-master Redis Cluster", () => {
  it("runs grouped tasks of handlers on every master with their per-key caps held", async () => {
    expect(new Set(HANDLERS.map((h) => cluster.masterOf(keys.keySlot(keys.queueKey(h))))).size).toBe(3);
    for (const [i, h] of HANDLERS.entries()) await setMaxRunningPerKey(cluster.client, h, 1 + (i % 2));
    const items = HANDLERS.flatMap((handler) =>
      KEYS.flatMap((k) => Array.from({ length: 8 }, (_, i) => ({ handler, params: { k, i }, options: { concurrencyKey: k } }))),
    );
    const created = await svc.bc.enqueueMany(items);
    const ids = created.map((r) => (r as { id: string }).id);
    const tasks = await Promise.all(ids.map((id) => svc.bc.wait(id, { timeoutMs: 60_000 })));
    expect(tasks.every((t) => t.status === "finished")).toBe(true);
    for (const [i, h] of HANDLERS.entries()) {
      const most = mostAtOnce(tasks.filter((t) => t.handler === h));
      expect(Math.max(...most.values()), h).toBeLessThanOrEqual(1 + (i % 2));
      expect(await groupKeysLeft(cluster.client, h, KEYS)).toEqual([]);
    }
  });

  it("cancels, deletes, lists and empties grouped tasks there", async () => {
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
    await setMaxRunningPerKey(cluster.client, HOLD, 1);
    const running = await svc.bc.enqueue(HOLD, {}, { concurrencyKey: "x" });
    await eventually(async () => (await svc.bc.getTask(running.id)).status === "started");
    const queued = await svc.bc.enqueueMany(
      Array.from({ length: 4 }, () => ({ handler: HOLD, options: { concurrencyKey: "x" } })),
    );
    const [first, second] = queued.map((r) => (r as { id: string }).id);
    expect((await svc.bc.cancel(first!)).status).toBe("canceled");
    expect(await svc.bc.delete(second!)).toBe(true);
    const info = (await admin.listQueues({})).queues.find((q) => q.handler === HOLD)!;
    expect(info).toMatchObject({ queued: 2n, started: 1n, queuedInGroups: 2n, groups: 1n, held: 2n });
    const listed = await admin.listTasks({ handler: HOLD, status: TaskStatus.QUEUED });
    expect(listed.tasks.map((t) => t.concurrencyKey)).toEqual(["x", "x"]);
    expect((await admin.emptyQueue({ handler: HOLD, status: TaskStatus.QUEUED })).deleted).toBe(2n);
    hold.open();
    await eventually(async () => (await svc.bc.getTask(running.id)).status === "finished");
    await eventually(async () => (await groupKeysLeft(cluster.client, HOLD, ["x"])).length === 0);
  });
});
