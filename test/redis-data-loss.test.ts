/**
 * Redis loses its data (FLUSHALL: the same as a restart without persistence, or a failover to an
 * empty replica) under running service processes: each says again what it owns (its queues in
 * mq:queues, its worker record), so recovery of a worker killed afterwards, listings and delayed
 * tasks work again without a restart.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskService } from "../gen/baichuan/v1/task_pb.js";
import type { Task } from "../src/core/domain.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import { freePort } from "./support/net.js";
import type { ServiceProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { postJson } from "./support/service.js";
import { startWorker } from "./support/workers.js";

let redis: TestRedis;
let bc: BaiChuan;
beforeAll(async () => {
  redis = await startRedis();
  bc = await BaiChuan.connect({ redis: redis.url }); // reads and watches; no sweeper of its own
});
afterAll(async () => {
  await bc?.close();
  await redis?.destroy();
});

/** The task once `pred` holds, watched (push-based). */
async function until(id: string, pred: (task: Task) => boolean): Promise<Task> {
  for await (const task of bc.watch(id)) if (pred(task)) return task;
  throw new Error(`task ${id} ended as ${(await bc.getTask(id)).status}`);
}

/** A service process (API and worker) on a free port, sweeping every second with 1 s leases. */
async function service(): Promise<{ proc: ServiceProcess; url: string }> {
  const port = await freePort();
  const proc = startWorker(redis, { BAICHUAN_API: "1", BAICHUAN_PORT: String(port), BAICHUAN_HOST: "127.0.0.1" });
  await proc.waitFor(/"worker started"/, 60_000);
  return { proc, url: `http://127.0.0.1:${port}` };
}

it("after FLUSHALL, a task of a worker killed later is recovered, and ListQueues lists the queues again", async () => {
  const a = await service();
  const b = await service();
  try {
    // A create through each API before the flush: each process has registered the queue.
    for (const { url } of [a, b]) {
      const { json } = await postJson(url, "/baichuan/task_create", { handler: "/faults/sleep", params: { ms: 1 } });
      expect((await bc.wait(json.data.task_id, { timeoutMs: 60_000 })).status).toBe("finished");
    }
    await redis.client.flushall();
    const flushedAt = Date.now();

    const { json } = await postJson(a.url, "/baichuan/task_create", {
      handler: "/faults/sleep",
      params: { ms: 600_000 },
      max_attempts: 3,
    });
    const id: string = json.data.task_id;
    const first = await until(id, (t) => t.status === "started");
    const [victim, survivor] = first.worker.endsWith(`:${a.proc.child.pid}`) ? [a, b] : [b, a];
    victim.proc.kill("SIGKILL");
    await victim.proc.exited;

    // The survivor sweeps, finds the lapsed lease and runs the task again.
    const again = await until(id, (t) => t.status === "started" && t.attempts === 2);
    expect(again.worker).toMatch(new RegExp(`:${survivor.proc.child.pid}$`));
    console.log(`[figures] FLUSHALL, then a worker killed: its task ran again ${Date.now() - flushedAt} ms after the flush`);

    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: survivor.url }));
    const { queues } = await admin.listQueues({});
    expect(queues.map((q) => q.handler)).toContain("/faults/sleep");
    const { workers } = await admin.listWorkers({});
    expect(workers.map((w) => w.name)).toContain(again.worker);

    // A delayed task created now is promoted when due.
    const tasks = createClient(TaskService, createGrpcTransport({ baseUrl: survivor.url }));
    const { taskId } = await tasks.createTask({
      handler: "/faults/sleep",
      params: { ms: 1 },
      options: { delay: durationFromMs(500) },
    });
    expect((await bc.wait(taskId, { timeoutMs: 60_000 })).status).toBe("finished");
  } finally {
    a.proc.kill("SIGKILL");
    b.proc.kill("SIGKILL");
    await Promise.all([a.proc.exited, b.proc.exited]);
  }
}, 180_000);
