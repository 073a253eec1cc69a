/**
 * Concurrency keys across worker processes (the real binary, test/fixtures/handlers, a 1 s lease):
 * max_running_per_key holds across three processes, and a worker killed with SIGKILL mid-task
 * frees its key's slot once the sweep recovers the task (back in its place in line, or failed as
 * lost), so no key is stuck. The cap is written straight into the handler's limits hash
 * (support/groups.ts) until SetQueueLimits lands.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Task } from "../src/core/domain.js";
import type { BaiChuan } from "../src/engine/baichuan.js";
import { groupKeysLeft, mostAtOnce, setMaxRunningPerKey } from "./support/groups.js";
import type { ServiceProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually } from "./support/service.js";
import { msFromIso } from "./support/time.js";
import { observer, startWorker } from "./support/workers.js";

const SLEEP = "/faults/sleep";

let redis: TestRedis;
let bc: BaiChuan;
const workers: ServiceProcess[] = [];

beforeAll(async () => {
  redis = await startRedis();
  for (let i = 0; i < 3; i++) workers.push(startWorker(redis, { BAICHUAN_CONCURRENCY: "20" }));
  bc = await observer(redis);
  await Promise.all(workers.map((w) => w.waitFor(/"worker started"/)));
});
afterAll(async () => {
  for (const w of workers) w.kill("SIGKILL");
  await bc?.close();
  await redis?.destroy();
});

const waitAll = (ids: string[]) => Promise.all(ids.map((id) => bc.wait(id, { timeoutMs: 60_000 })));

describe("concurrency keys across worker processes", () => {
  it("never runs more than max_running_per_key (2) tasks of a key at once across three processes", async () => {
    await setMaxRunningPerKey(redis.client, SLEEP, 2);
    const items = ["a", "b", "c", "d", "e"].flatMap((k) =>
      Array.from({ length: 16 }, (_, i) => ({ handler: SLEEP, params: { ms: 30, k, i }, options: { concurrencyKey: k } })),
    );
    const created = await bc.enqueueMany(items);
    const tasks = await waitAll(created.map((r) => (r as { id: string }).id));
    expect(tasks.every((t) => t.status === "finished")).toBe(true);
    const most = mostAtOnce(tasks);
    expect([...most.keys()].sort()).toEqual(["a", "b", "c", "d", "e"]);
    expect(Math.max(...most.values())).toBe(2); // the cap is reached, never passed
    expect(new Set(tasks.map((t) => t.worker)).size).toBeGreaterThan(1);
    expect(await groupKeysLeft(redis.client, SLEEP, ["a", "b", "c", "d", "e"])).toEqual([]);
  });

  it("frees a key's slot when a worker killed with SIGKILL mid-task is recovered by the sweep", async () => {
    await setMaxRunningPerKey(redis.client, SLEEP, 1);
    // "k": the running task has a second attempt and goes back to its place, ahead of the one queued
    // behind it. "j": the running task has none and fails as lost; the queued one runs.
    const k1 = (await bc.enqueue(SLEEP, { ms: 5000 }, { concurrencyKey: "k", maxAttempts: 2 })).id;
    const j1 = (await bc.enqueue(SLEEP, { ms: 60_000 }, { concurrencyKey: "j" })).id;
    const k2 = (await bc.enqueue(SLEEP, { ms: 10 }, { concurrencyKey: "k" })).id;
    const j2 = (await bc.enqueue(SLEEP, { ms: 10 }, { concurrencyKey: "j" })).id;
    const running = await eventually(async () => {
      const both = await Promise.all([k1, j1].map((id) => bc.getTask(id)));
      return both.every((t) => t.status === "started") ? both : undefined;
    });
    expect((await bc.getTask(k2)).status).toBe("queued"); // held by its key's cap
    const pids = new Set(running.map((t) => Number(t.worker.split(":").pop())));
    const victims = workers.filter((w) => pids.has(w.child.pid!));
    expect(victims.length).toBeLessThan(workers.length); // a process is left to run the rest
    for (const w of victims) w.kill("SIGKILL");
    await Promise.all(victims.map((w) => w.exited));

    const [k1End, j1End, k2End, j2End] = (await waitAll([k1, j1, k2, j2])) as [Task, Task, Task, Task];
    expect(k1End).toMatchObject({ status: "finished", attempts: 2 });
    expect(j1End).toMatchObject({ status: "failed", errorCode: "ERR_WORKER_LOST" });
    expect(k2End.status).toBe("finished");
    expect(j2End.status).toBe("finished");
    // k1 went back ahead of k2, and the cap held: k2 started after k1's second run ended.
    expect(msFromIso(k2End.startedAt)).toBeGreaterThanOrEqual(msFromIso(k1End.endedAt));
    expect(msFromIso(j2End.startedAt)).toBeGreaterThanOrEqual(msFromIso(j1End.endedAt));
    expect(await groupKeysLeft(redis.client, SLEEP, ["k", "j"])).toEqual([]);
    const [stats] = await bc.admin.queueStats([SLEEP]);
    expect(stats).toMatchObject({ queued: 0, started: 0, queuedInGroups: 0, groups: 0, heldByKeyCaps: 0 });
  });
});
