/**
 * Claims (create.lua, docs/architecture.md "Claims"): a create made in a process whose worker has
 * an idle slot for the handler starts the task in the same script, and a wait or watch in that
 * process hears of its end from the worker, not through pub/sub. Checked on a real redis-server,
 * with real workers, and through the Claimer seam the worker itself uses (to hold a claim unrun,
 * as a process that died would).
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Task } from "../src/core/domain.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import type { Claimer } from "../src/store/create.js";
import * as keys from "../src/store/keys.js";
import type { Store } from "../src/store/store.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually, gate } from "./support/service.js";
import { storeOf } from "./support/store.js";

const H = "/claims/run";
let redis: TestRedis;
const instances: BaiChuan[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
beforeEach(async () => {
  await redis.client.flushdb();
});
afterEach(async () => {
  await Promise.all(instances.splice(0).map((bc) => bc.close(500)));
});
afterAll(async () => {
  await redis?.destroy();
});

async function instance(): Promise<BaiChuan> {
  const bc = await BaiChuan.connect({ redis: redis.url });
  instances.push(bc);
  return bc;
}

const WARM = "/claims/warm";

/**
 * Once a task of another handler ran, the worker's first look at its queues (a fetch per handler
 * as it starts) is over: its lanes are idle, and creates may be claimed.
 */
async function settled(bc: BaiChuan): Promise<void> {
  await bc.wait((await bc.enqueue(WARM, {})).id);
  await bc.wait((await bc.enqueue(WARM, {})).id);
}

/** Calls of a Redis command since the last CONFIG RESETSTAT. */
async function calls(command: string): Promise<number> {
  const stats = await redis.client.info("commandstats");
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
}

/** A Claimer that holds what it is given and runs nothing (as a process that died at once). */
function holdingClaimer(leaseMs = 10_000, slots = 5) {
  const got: Task[] = [];
  const claimer: Claimer = {
    name: "claims-test:0:1",
    leaseMs,
    reserve: (_handler, count) => Math.min(count, slots),
    claimed: (_handler, tasks) => void got.push(...tasks),
  };
  return { claimer, got };
}

describe("claims by an idle worker of the creating process", () => {
  it("start the task in the create's script, and a wait hears its end from the worker: no fetch, no subscription", async () => {
    const bc = await instance();
    bc.register(H, (params) => ({ echo: params }));
    bc.register(WARM, () => null);
    const worker = await bc.startWorker({ concurrency: 4 });
    await settled(bc);
    await redis.client.config("RESETSTAT");
    for (let i = 0; i < 20; i++) {
      const { id } = await bc.enqueue(H, { i });
      const task = await bc.wait(id);
      expect(task.status).toBe("finished");
      expect(task.result).toEqual({ echo: { i } });
      expect(task.worker).toBe(worker.name);
      expect(task.attempts).toBe(1);
    }
    expect(await calls("lpop")).toBe(0); // no fetch took them from a queue
    expect(await calls("rpush")).toBe(0); // none was queued
    expect(await calls("ssubscribe")).toBe(0); // no wait subscribed
  });

  it("streams a claimed task's progress and end to a watch in the same process", async () => {
    const bc = await instance();
    const release = gate();
    bc.register(WARM, () => null);
    bc.register(H, async (_p, ctx) => {
      await ctx.progress(50, "half");
      await release.opened;
      return "done";
    });
    await bc.startWorker({ concurrency: 2 });
    await settled(bc);
    const { id } = await bc.enqueue(H, {});
    const seen: string[] = [];
    for await (const task of bc.watch(id)) {
      seen.push(task.progress !== undefined ? `${task.status} ${task.progress}` : task.status);
      if (task.progress === 50) release.open();
    }
    expect(seen[0]).toBe("started");
    expect(seen).toContain("started 50");
    expect(seen.at(-1)).toMatch(/^finished/);
  });

  it("a wait on a claimed task that fails and is retried returns its final end", async () => {
    const bc = await instance();
    let runs = 0;
    bc.register(H, () => {
      runs++;
      if (runs === 1) throw new Error("first run fails");
      return runs;
    });
    await bc.startWorker({ concurrency: 2, retryBaseMs: 50 });
    const { id } = await bc.enqueue(H, {}, { maxAttempts: 2 });
    const task = await bc.wait(id);
    expect(task.status).toBe("finished");
    expect(task.attempts).toBe(2);
    expect(task.result).toBe(2);
  });

  it("a wait on a claimed task canceled while it runs returns it canceled", async () => {
    const bc = await instance();
    const started = gate();
    bc.register(H, (_p, ctx) => {
      started.open();
      return new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    });
    await bc.startWorker({ concurrency: 2 });
    const { id } = await bc.enqueue(H, {});
    const waited = bc.wait(id);
    await started.opened;
    await bc.cancel(id);
    expect((await waited).status).toBe("canceled");
  });
});

describe("create.lua claims", () => {
  let bc: BaiChuan;
  let store: Store;
  beforeEach(async () => {
    bc = await instance();
    store = storeOf(bc);
  });

  it("claim only while no task of the handler waits: a task queued first keeps its turn", async () => {
    const first = await bc.enqueue(H, { n: 1 }); // no claimer yet: queued
    const { claimer, got } = holdingClaimer();
    store.creator.claimer = claimer;
    const second = await bc.enqueue(H, { n: 2 });
    expect(got).toEqual([]);
    expect(await redis.client.lrange(keys.queueKey(H), 0, -1)).toEqual([first.id, second.id]);
  });

  it("claims the leading tasks of a batch up to the slots held, in order; the rest queue behind them", async () => {
    const { claimer, got } = holdingClaimer(10_000, 2);
    store.creator.claimer = claimer;
    const results = await bc.enqueueMany([1, 2, 3, 4].map((n) => ({ handler: H, params: { n } })));
    const ids = results.map((r) => (r as { id: string }).id);
    expect(got.map((t) => t.id)).toEqual(ids.slice(0, 2));
    expect(got.map((t) => t.status)).toEqual(["started", "started"]);
    expect(got[0]!.worker).toBe(claimer.name);
    expect(await redis.client.lrange(keys.queueKey(H), 0, -1)).toEqual(ids.slice(2));
    expect(await redis.client.zcard(keys.wipKey(H))).toBe(2);
  });

  it("claims nothing for a paused or limited handler, nor a delayed task, one with a queue ttl or a concurrency key", async () => {
    const { claimer, got } = holdingClaimer();
    store.creator.claimer = claimer;
    const all = { allows: () => true };
    await bc.admin.setPaused(H, true, all);
    await bc.enqueue(H, {});
    await bc.admin.setPaused(H, false, all);
    await redis.client.del(...keys.queueKeys(H));
    await bc.admin.setLimits(H, { ratePerSecond: 100 }, all);
    await bc.enqueue(H, {});
    await redis.client.del(...keys.queueKeys(H));
    await bc.admin.setLimits(H, { maxRunning: 3 }, all);
    await bc.enqueue(H, {});
    await redis.client.del(keys.limitsKey(H));
    await redis.client.del(...keys.queueKeys(H));
    await bc.enqueue(H, {}, { delay: 60 });
    await bc.enqueue(H, {}, { ttl: 60 });
    await bc.enqueue(H, {}, { concurrencyKey: "k" });
    expect(got).toEqual([]);
  });

  it("a worker that began to stop runs nothing a create claimed for it: the task goes back to the front of its queue", async () => {
    const other = await instance();
    other.register(H, () => "ran");
    const worker = await other.startWorker({ concurrency: 2 });
    // The create claims under that worker's name (as its own process's create would).
    const { claimer, got } = holdingClaimer();
    store.creator.claimer = { ...claimer, name: worker.name };
    const { id } = await bc.enqueue(H, {});
    store.creator.claimer = undefined;
    expect(got.map((t) => t.id)).toEqual([id]);
    const stopping = worker.stop(500);
    // The create's answer comes after the stop began (as the claimer that held the slot would get it).
    worker.claimed(H, got, 1, false);
    await stopping;
    await eventually(async () => (await bc.getTask(id)).status === "queued");
    expect((await bc.getTask(id)).attempts).toBe(0);
    expect(await redis.client.lrange(keys.queueKey(H), 0, -1)).toEqual([id]);
  });

  it("a claimed task whose process never runs it is taken back by the sweep when its lease lapses", async () => {
    const { claimer, got } = holdingClaimer(200);
    store.creator.claimer = claimer;
    const { id } = await bc.enqueue(H, {}, { maxAttempts: 2 });
    expect(got.map((t) => t.id)).toEqual([id]);
    store.creator.claimer = undefined;
    await eventually(async () => {
      await store.sweep(H, 200);
      return (await bc.getTask(id)).status === "queued";
    });
    expect(await redis.client.lrange(keys.queueKey(H), 0, -1)).toContain(id);
  });
});
