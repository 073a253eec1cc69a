/**
 * Schedules run by real service processes (the scheduler each one starts), against a real
 * redis-server with an append-only file: three processes create exactly one task per tick (one of
 * them killed halfway), and schedules survive a restart of every process and of Redis, after which
 * the ticks missed while everything was down create one task (none with skip_missed).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Task } from "../src/core/domain.js";
import type { Schedule } from "../src/core/schedule.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import * as keys from "../src/store/keys.js";
import type { ServiceProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually } from "./support/service.js";
import { msFromIso, sleep } from "./support/time.js";
import { startWorker } from "./support/workers.js";

const HANDLER = "/sched_proc/none"; // no process runs it: its tasks stay queued, to be counted
let redis: TestRedis;
let bc: BaiChuan;
const procs: ServiceProcess[] = [];

beforeAll(async () => {
  // Every write on disk before it is answered: a crash of Redis loses nothing.
  redis = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
  bc = await BaiChuan.connect({ redis: `${redis.url}?socket_timeout=30` });
});
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  await bc?.close();
  await redis?.destroy();
});

async function startSchedulers(n: number): Promise<ServiceProcess[]> {
  const started = Array.from({ length: n }, () => startWorker(redis));
  procs.push(...started);
  await Promise.all(started.map((p) => p.waitFor(/scheduler started/)));
  return started;
}

/** A schedule's tasks, by tick (they stay queued: nothing runs their handler). */
async function tasksOf(scheduleId: string): Promise<Task[]> {
  const ids = await redis.client.lrange(keys.queueKey(HANDLER), 0, -1);
  const tasks = await Promise.all(ids.map((id) => bc.getTask(id)));
  return tasks.filter((t) => t.scheduleId === scheduleId).sort((a, b) => msFromIso(a.scheduleTick) - msFromIso(b.scheduleTick));
}

const tickTimes = (tasks: Task[]) => tasks.map((t) => msFromIso(t.scheduleTick));

describe("several processes, restarts, missed ticks", () => {
  let start = 0;

  it("three processes make one task per tick of an `every 1 s` schedule for 30 s, one of them killed halfway", async () => {
    const [first] = await startSchedulers(3);
    start = Math.ceil((Date.now() + 2000) / 1000) * 1000;
    await bc.schedules.create({ id: "tick30", handler: HANDLER, every: 1, startAt: start, endAt: start + 29_000 });
    // Two more for the restart below, ticking all along.
    await bc.schedules.create({ id: "gap", handler: HANDLER, every: 2 });
    await bc.schedules.create({ id: "gap-skip", handler: HANDLER, every: 2, skipMissed: true });

    await eventually(async () => ((await bc.schedules.get("tick30")).lastRunMs ?? 0) >= start + 10_000, 60_000);
    first!.kill("SIGKILL"); // between any two steps of a tick: the other two go on
    const done = await eventually(async () => {
      const s = await bc.schedules.get("tick30");
      return s.lastRunMs === start + 29_000 ? s : undefined;
    }, 90_000);
    expect(done.nextRunMs).toBeUndefined();

    const tasks = await tasksOf("tick30");
    const ticks = tickTimes(tasks);
    expect(tasks.length).toBeGreaterThanOrEqual(29);
    expect(tasks.length).toBeLessThanOrEqual(31);
    expect(new Set(ticks).size).toBe(tasks.length); // one task per tick
    for (const t of ticks) expect((t - start) % 1000).toBe(0);
    expect(ticks[0]).toBe(start);
    expect(ticks.at(-1)).toBe(start + 29_000);
    expect(tasks.every((t) => t.scheduleId === "tick30" && t.handler === HANDLER)).toBe(true);
    // The last task of the schedule is the one of its last tick.
    expect(done.lastTaskId).toBe(tasks.at(-1)!.id);
  });

  it("survives a restart of every process and of Redis (AOF), then runs the missed ticks once (none with skip_missed)", async () => {
    for (const p of procs.splice(0)) {
      p.kill("SIGTERM");
      await p.exited;
    }
    const before: Record<string, Schedule> = {
      gap: await bc.schedules.get("gap"),
      "gap-skip": await bc.schedules.get("gap-skip"),
    };
    await redis.stop(true); // a crash: only the append-only file is left
    await sleep(10_000); // the downtime: several ticks of each schedule pass
    await redis.restart();
    const upAt = Date.now();
    const [proc] = await startSchedulers(1);

    for (const id of ["gap", "gap-skip"]) {
      const after = await eventually(async () => {
        const s = await bc.schedules.get(id).catch(() => undefined); // this client may still be reconnecting
        return (s?.lastRunMs ?? 0) > upAt ? s : undefined;
      }, 60_000);
      // The same schedule: definition, anchor and state came back from the file.
      expect({ ...after, nextRunMs: 0, lastRunMs: 0, lastTaskId: "", lastTaskStatus: undefined }).toEqual({
        ...before[id]!,
        nextRunMs: 0,
        lastRunMs: 0,
        lastTaskId: "",
        lastTaskStatus: undefined,
      });
    }
    // Ticks before upAt - 5 s were missed (no process ran until upAt): at least two per schedule.
    const missedWindow = (tasks: Task[], id: string) =>
      tickTimes(tasks).filter((t) => t > before[id]!.lastRunMs! && t < upAt - 5000);
    expect(before.gap!.lastRunMs! + 4000).toBeLessThan(upAt - 5000);
    const gap = await tasksOf("gap");
    expect(missedWindow(gap, "gap")).toEqual([before.gap!.lastRunMs! + 2000]); // one task, for the first missed tick
    expect(missedWindow(await tasksOf("gap-skip"), "gap-skip")).toEqual([]);
    expect(proc!.output()).toMatch(/missed ticks/);
    expect(new Set(tickTimes(gap)).size).toBe(gap.length);
  });
});
