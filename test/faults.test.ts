/**
 * Fault injection with real processes and a real redis-server: a worker killed with SIGKILL, a
 * handler that blocks its event loop, SIGTERM under load, Redis killed and restarted (AOF), Redis
 * paused. Figures (recovery times) are printed for docs/reliability.md.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Task } from "../src/core/domain.js";
import { createLogger } from "../src/ops/log.js";
import type { ServiceProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually, gate, startService } from "./support/service.js";
import { msFromIso } from "./support/time.js";
import { observer, startWorker } from "./support/workers.js";

const SLEEP = "/faults/sleep";
const BLOCK = "/faults/block";

describe("a worker killed with SIGKILL", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.destroy();
  });

  it("loses no task: each of 200 running tasks is run again elsewhere or fails as lost", async () => {
    const a = startWorker(redis);
    const b = startWorker(redis);
    const bc = await observer(redis);
    try {
      await a.waitFor(/"worker started"/);
      await b.waitFor(/"worker started"/);
      // Even tasks may run twice, odd ones once.
      const ids: string[] = [];
      for (let i = 0; i < 200; i++) ids.push((await bc.enqueue(SLEEP, { ms: 8000, i }, { maxAttempts: i % 2 === 0 ? 2 : 1 })).id);
      await eventually(async () => {
        const tasks = await Promise.all(ids.map((id) => bc.getTask(id)));
        return tasks.every((t) => t.status === "started") || undefined;
      });
      const killedAt = Date.now();
      a.kill("SIGKILL");
      await a.exited;

      const tasks: Task[] = await Promise.all(ids.map((id) => bc.wait(id, { timeoutMs: 60_000 })));
      const onA = (t: Task) => t.fields.handle_worker?.endsWith(`:${a.child.pid}`) || t.attempts === 2;
      const lostOnes = tasks.filter((t) => t.status === "failed");
      const rerun = tasks.filter((t) => t.status === "finished" && t.attempts === 2);
      expect(tasks.every((t) => t.status === "finished" || t.status === "failed")).toBe(true);
      expect(lostOnes.every((t) => t.errorCode === "ERR_WORKER_LOST" && t.maxAttempts === 1)).toBe(true);
      expect(rerun.every((t) => t.worker.endsWith(`:${b.child.pid}`))).toBe(true);
      expect(lostOnes.length + rerun.length).toBeGreaterThan(0);
      expect(tasks.filter(onA).length).toBe(lostOnes.length + rerun.length);
      const recoveredAt = Math.max(...rerun.map((t) => msFromIso(t.startedAt)), ...lostOnes.map((t) => msFromIso(t.endedAt)));
      console.log(
        `[figures] SIGKILL: ${rerun.length} tasks run again on the other worker, ${lostOnes.length} failed as lost, ` +
          `recovered ${recoveredAt - killedAt} ms after the kill (lease 1 s, sweep 0.25 s)`,
      );
    } finally {
      a.kill("SIGKILL");
      b.kill("SIGKILL");
      await bc.close();
    }
  });

  it("does not take back a task whose handler blocks the event loop longer than the lease", async () => {
    const w = startWorker(redis);
    const bc = await observer(redis);
    try {
      await w.waitFor(/"worker started"/);
      const { id } = await bc.enqueue(BLOCK, { ms: 3000 }, { maxAttempts: 3 });
      const task = await bc.wait(id, { timeoutMs: 60_000 });
      // The lease keeper's thread renewed the lease while the main thread was blocked.
      expect(task).toMatchObject({ status: "finished", attempts: 1, result: { blocked: 3000 } });
    } finally {
      w.kill("SIGKILL");
      await bc.close();
    }
  });
});

describe("SIGTERM under load", () => {
  it("exits within the grace period, finishing short tasks and requeuing long ones: nothing lost", async () => {
    const redis = await startRedis();
    const a = startWorker(redis, { BAICHUAN_SHUTDOWN_GRACE_SECONDS: "1", BAICHUAN_CONCURRENCY: "20" });
    const bc = await observer(redis);
    let b: ServiceProcess | undefined;
    try {
      await a.waitFor(/"worker started"/);
      const short = await Promise.all(Array.from({ length: 15 }, (_, i) => bc.enqueue(SLEEP, { ms: 300, i }).then((r) => r.id)));
      const long = await Promise.all(Array.from({ length: 5 }, (_, i) => bc.enqueue(SLEEP, { ms: 5000, i }).then((r) => r.id)));
      await eventually(
        async () => (await Promise.all(long.map((id) => bc.getTask(id)))).every((t) => t.status === "started") || undefined,
      );
      const signalled = Date.now();
      a.kill("SIGTERM");
      expect(await a.exited).toBe(0);
      const exitMs = Date.now() - signalled;
      expect(exitMs).toBeLessThan(15_000); // grace 1 s; generous for a busy machine

      for (const id of long) expect((await bc.getTask(id)).status).toBe("queued");
      b = startWorker(redis);
      const all = await Promise.all([...short, ...long].map((id) => bc.wait(id, { timeoutMs: 60_000 })));
      expect(all.filter((t) => t.status !== "finished").map((t) => [t.id, t.status, t.error])).toEqual([]);
      console.log(
        `[figures] SIGTERM: exited 0 in ${exitMs} ms (grace 1 s); 15 short tasks finished, 5 long ones requeued and run by another worker`,
      );
    } finally {
      a.kill("SIGKILL");
      b?.kill("SIGKILL");
      await bc.close();
      await redis.destroy();
    }
  });
});

describe("Redis restarts and pauses", () => {
  it("does not take a running task from its live worker when Redis is away for longer than the lease", async () => {
    const redis = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
    const w = startWorker(redis);
    const bc = await observer(redis);
    try {
      await w.waitFor(/"worker started"/);
      const { id } = await bc.enqueue(SLEEP, { ms: 4000 });
      await eventually(async () => (await bc.getTask(id)).status === "started");
      await redis.stop(true); // SIGKILL: the lease (1 s) lapses while Redis is away
      await new Promise((r) => setTimeout(r, 2000));
      await redis.restart();
      // The sweep (every 250 ms) gives the worker one lease period to renew before recovering.
      // (The observer's own connections reconnect too: wait fails fast until they are back.)
      const task = await eventually(() => bc.wait(id, { timeoutMs: 60_000 }).catch(() => undefined), 60_000);
      expect(task.status).toBe("finished");
      expect(task.attempts).toBe(1);
      expect(task.worker).toMatch(/:\d+$/);
    } finally {
      w.kill("SIGKILL");
      await bc.close();
      await redis.destroy();
    }
  });

  it("loses no accepted task when redis-server (AOF, fsync always) is killed and restarted under load", async () => {
    const redis = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
    const w = startWorker(redis, { BAICHUAN_CONCURRENCY: "20" });
    const bc = await observer(redis);
    try {
      await w.waitFor(/"worker started"/);
      const accepted: string[] = [];
      let refused = 0;
      const deadline = Date.now() + 3000;
      const producer = (async () => {
        while (Date.now() < deadline) {
          try {
            accepted.push((await bc.enqueue(SLEEP, { ms: 50 })).id);
          } catch {
            refused++;
          }
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await new Promise((r) => setTimeout(r, 1000));
      await redis.stop(true); // SIGKILL
      await new Promise((r) => setTimeout(r, 500));
      await redis.restart();
      await producer;
      const tasks = await Promise.all(accepted.map((id) => bc.wait(id, { timeoutMs: 60_000 })));
      expect(tasks.filter((t) => t.status !== "finished").map((t) => [t.id, t.status, t.error, t.attempts])).toEqual([]);
      expect(refused).toBeGreaterThan(0);
      console.log(
        `[figures] Redis SIGKILL + restart under load: ${accepted.length} accepted tasks all finished, ${refused} creates refused while down`,
      );
      // The worker process recovered by itself.
      expect(w.child.exitCode).toBe(null);
    } finally {
      w.kill("SIGKILL");
      await bc.close();
      await redis.destroy();
    }
  });

  it("runs the tasks a fetch started after its answer came too late, once each (Redis paused past the socket timeout)", async () => {
    const lines: string[] = [];
    const hold = gate();
    const runs = new Map<string, number>();
    let holding = false;
    const svc = await startService({
      demo: false,
      socketTimeoutSeconds: 1,
      worker: { concurrency: 1 },
      logger: createLogger("info", {}, (line) => void lines.push(line)),
      handlers: {
        "/faults/gated": async (params, ctx) => {
          runs.set(ctx.taskId, (runs.get(ctx.taskId) ?? 0) + 1);
          if ((params as { hold?: boolean }).hold) {
            holding = true;
            await hold.opened;
          }
          return "ran";
        },
      },
    });
    try {
      const first = await svc.bc.enqueue("/faults/gated", { hold: true });
      await eventually(() => holding);
      // The only slot is taken: the second task waits in the queue.
      const second = await svc.bc.enqueue("/faults/gated", { hold: false });
      await svc.redis.client.call("CLIENT", "PAUSE", "120000", "WRITE");
      // The slot frees: the worker's fetch reaches the paused Redis and gives up after 1 s.
      hold.open();
      await eventually(() => lines.some((line) => line.includes("fetching tasks failed")), 60_000);
      // Redis now runs that fetch: the second task is started under the worker, which never hears of it.
      await svc.redis.client.call("CLIENT", "UNPAUSE");
      const [a, b] = await Promise.all([
        svc.bc.wait(first.id, { timeoutMs: 60_000 }),
        svc.bc.wait(second.id, { timeoutMs: 60_000 }),
      ]);
      expect([a.status, b.status]).toEqual(["finished", "finished"]);
      expect(b.attempts).toBe(1);
      expect(runs.get(second.id)).toBe(1);
      expect(lines.some((line) => line.includes("took back tasks a lost fetch answer had started"))).toBe(true);
    } finally {
      await svc.redis.client.call("CLIENT", "UNPAUSE").catch(() => {});
      await svc.close();
    }
  });

  it("answers UNAVAILABLE within the socket timeout while Redis is paused, then recovers", async () => {
    const svc = await startService({ socketTimeoutSeconds: 2 });
    try {
      const client = svc.clients["connect-h2"];
      await client.createTask({ handler: "/demo_api/ping" });
      // WRITE: scripts (creates) wait, and the pause can be lifted from another connection.
      await svc.redis.client.call("CLIENT", "PAUSE", "60000", "WRITE");
      const t0 = Date.now();
      const err = await client.createTask({ handler: "/demo_api/ping" }).catch((e) => ConnectError.from(e));
      const waited = Date.now() - t0;
      expect((err as ConnectError).code).toBe(Code.Unavailable);
      expect(waited).toBeLessThan(30_000); // the socket timeout (2 s), not the pause (60 s)
      await svc.redis.client.call("CLIENT", "UNPAUSE");
      await eventually(async () => client.createTask({ handler: "/demo_api/ping" }).catch(() => undefined), 60_000);
      console.log(`[figures] CLIENT PAUSE: UNAVAILABLE after ${waited} ms (socket_timeout 2 s), recovered when the pause ended`);
    } finally {
      await svc.close();
    }
  });
});
