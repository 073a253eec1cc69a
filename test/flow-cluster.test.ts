/**
 * Flow control on a real Redis Cluster (3 masters, 3 replicas): the limits hash, the token bucket
 * and the running set of a handler share its slot, so fetch.lua, set-limits.lua, queue-flow.lua and
 * the scripts that publish `go` run there (Redis refuses a script reaching outside its slot). Two
 * services, each with its own worker, share the cluster: a rate, a running limit and a pause hold
 * across both.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import * as keys from "../src/store/keys.js";
import type { HandlerContext } from "../src/worker/handlers.js";
import { startCluster, type TestCluster } from "./support/cluster.js";
import { mostAtOnce, steadyRate } from "./support/flow.js";
import type { TestRedis } from "./support/redis.js";
import { startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";
import { msFromIso, sleep } from "./support/time.js";

const RATE = "/flow_cluster/rate";
const RUNNING = "/flow_cluster/running";
const PAUSED = "/flow_cluster/paused";

let cluster: TestCluster;
let a: TestService;
let b: TestService;
let admin: Client<typeof AdminService>;

const wait = (ms: number, signal: AbortSignal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => clearTimeout(timer));
  });

beforeAll(async () => {
  cluster = await startCluster();
  const handlers = {
    [RATE]: () => ({}),
    [RUNNING]: (_p: unknown, ctx: HandlerContext) => wait(100, ctx.signal),
    [PAUSED]: () => ({}),
  };
  const redis = { url: cluster.url } as TestRedis; // the cluster is the test's to stop
  a = await startService({ redis, demo: false, handlers, worker: { concurrency: 10 } });
  b = await startService({ redis, demo: false, handlers, worker: { concurrency: 10 } });
  admin = createClient(AdminService, createConnectTransport({ baseUrl: a.baseUrl, httpVersion: "1.1" }));
}, 120_000);

afterAll(async () => {
  await b?.close();
  await a?.close();
  await cluster?.destroy();
});

async function enqueue(handler: string, count: number): Promise<string[]> {
  const results = await a.bc.enqueueMany(Array.from({ length: count }, () => ({ handler })));
  return results.map((r) => {
    if (r instanceof Error) throw r;
    return r.id;
  });
}

const ended = (ids: string[]) => Promise.all(ids.map((id) => a.bc.wait(id, { timeoutMs: 60_000 })));

describe("flow limits on a 3-master Redis Cluster", () => {
  it("keeps each handler's limits hash and bucket in the slot of its queue and running set", () => {
    const handlers = [RATE, RUNNING, PAUSED];
    for (const h of handlers) {
      expect(keys.keySlot(keys.limitsKey(h))).toBe(keys.keySlot(keys.queueKey(h)));
      expect(keys.keySlot(keys.bucketKey(h))).toBe(keys.keySlot(keys.wipKey(h)));
    }
  });

  it("a rate of 10/s holds across two processes (after the first burst)", async () => {
    await admin.setQueueLimits({ handler: RATE, limits: { ratePerSecond: 10, burst: 5 } });
    const tasks = await ended(await enqueue(RATE, 5 + 40));
    expect(tasks.filter((t) => t.status !== "finished")).toEqual([]);
    const { rate } = steadyRate(tasks, 5);
    expect(rate).toBeGreaterThanOrEqual(9);
    expect(rate).toBeLessThanOrEqual(11);
    expect(new Set(tasks.map((t) => t.worker)).size).toBe(2);
  }, 60_000);

  it("max_running 2 is never exceeded across two processes, and each end wakes the next start", async () => {
    await admin.setQueueLimits({ handler: RUNNING, limits: { maxRunning: 2 } });
    const tasks = await ended(await enqueue(RUNNING, 20));
    expect(tasks.filter((t) => t.status !== "finished")).toEqual([]);
    expect(mostAtOnce(tasks)).toBe(2);
    // Woken by finish.lua's `go`, not by the 5 s safety timer: 20 runs of 100 ms, two at a time.
    const span =
      msFromIso(
        tasks
          .map((t) => t.endedAt!)
          .sort()
          .at(-1),
      ) - msFromIso(tasks.map((t) => t.startedAt!).sort()[0]);
    expect(span).toBeLessThan(5000);
  }, 60_000);

  it("a pause holds every task QUEUED in both processes; resume starts them", async () => {
    const paused = await admin.pauseQueue({ handler: PAUSED });
    expect(paused.queue).toMatchObject({ paused: true });
    const ids = await enqueue(PAUSED, 5);
    await sleep(1000); // a bounded look: nothing starts
    expect((await storeOf(a.bc).getTasks(ids)).map((t) => t.status)).toEqual(Array(5).fill("queued"));
    const listed = (await admin.listQueues({})).queues.find((q) => q.handler === PAUSED);
    expect(listed).toMatchObject({ paused: true, queued: 5n, held: 5n });
    await admin.resumeQueue({ handler: PAUSED });
    expect((await ended(ids)).map((t) => t.status)).toEqual(Array(5).fill("finished"));
  }, 60_000);
});
