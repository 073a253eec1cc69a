/**
 * The per-minute series of ended runs (lib/minutes.lua, series.lua, GetQueueSeries), on a real
 * redis-server: what each way of ending writes, the minute it lands in (the task's ended_at),
 * percentiles within the histogram's resolution, zeros for empty minutes, the window, expiry and
 * the bound on keys and fields; then GetQueueSeries through the real listener with real handlers
 * that take known times, its validation and its tokens.
 */

import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import type { Task } from "../src/core/domain.js";
import * as keys from "../src/store/keys.js";
import { parseRedisUrl } from "../src/store/redis-url.js";
import { bucketOf, bucketSeconds, RUN_TIME_BUCKETS, RUN_TIME_RESOLUTION, SERIES_MINUTES } from "../src/store/run-times.js";
import { Store } from "../src/store/store.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { codeOf, eventually, startService, type TestService } from "./support/service.js";
import { msFromIso } from "./support/time.js";

const H = "/series_test/run";
const W = "w:1:1";

/** The nearest-rank percentile of some run times (seconds). */
function exactPercentile(times: number[], p: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1]!;
}

/** `reported` is what the histogram may say of `exact`: within its resolution (a float's slack). */
function expectWithinResolution(reported: number | undefined, exact: number): void {
  expect(reported).toBeDefined();
  const ratio = reported! / exact;
  expect(ratio).toBeGreaterThan(1 / (1 + RUN_TIME_RESOLUTION) - 1e-9);
  expect(ratio).toBeLessThan(1 + RUN_TIME_RESOLUTION + 1e-9);
}

const minuteOf = (iso: string | undefined) => Math.floor(msFromIso(iso) / 60_000);

describe("the series in Redis (Store)", () => {
  let redis: TestRedis;
  let store: Store;

  beforeAll(async () => {
    redis = await startRedis();
    store = new Store(parseRedisUrl(redis.url));
    await store.connect();
  });
  afterAll(async () => {
    await store?.close();
    await redis?.destroy();
  });
  beforeEach(async () => {
    await redis.client.flushdb();
  });

  async function started(n: number, overrides: Partial<Parameters<Store["createTask"]>[0]> = {}): Promise<Task[]> {
    for (let i = 0; i < n; i++) {
      await store.createTask({
        handler: H,
        paramsJson: "{}",
        timeout: 180,
        resultTtl: 60,
        failureTtl: 60,
        ttl: undefined,
        maxAttempts: 1,
        maxQueued: 0,
        ip: "",
        uniqueKey: undefined,
        ...overrides,
      });
    }
    return store.fetchTasks(H, n, W, 60_000);
  }

  const finish = (task: Task, kind: "finished" | "failed", cost: number, retryInMs?: number) =>
    store.finishTask(task, {
      kind,
      resultJson: kind === "finished" ? '{"stat":"OK","data":1}' : '{"stat":"ERR_SERVER_EXCEPTION","error":"x"}',
      cost,
      worker: W,
      ...(kind === "failed" ? { error: "x", retryInMs } : {}),
    });

  /** The series' minute keys of H now in Redis. */
  const minuteKeys = () => redis.client.keys(`${keys.statsKey(H)}:*`);

  it("counts finished and failed runs in the minute they ended, with run time percentiles", async () => {
    const tasks = await started(40);
    // 30 finish (10 ms .. 300 ms), 10 fail (1.5 s), all in one batch: one script call.
    const costs = tasks.map((_, i) => (i < 30 ? 0.01 * (i + 1) : 1.5));
    const ends = await Promise.all(tasks.map((t, i) => finish(t, i < 30 ? "finished" : "failed", costs[i]!)));
    expect(ends.every((e) => e === "ended")).toBe(true);

    const [ended] = await store.getTasks([tasks[0]!.id]);
    const points = await store.queries.series(H, 5);
    expect(points).toHaveLength(5);
    const point = points.find((p) => p.minuteMs === minuteOf(ended!.endedAt) * 60_000)!;
    expect([point.finished, point.failed]).toEqual([30, 10]);
    expectWithinResolution(point.p50, exactPercentile(costs, 0.5));
    expectWithinResolution(point.p95, exactPercentile(costs, 0.95));
    expectWithinResolution(point.p99, exactPercentile(costs, 0.99));
    expect(point.p99).toBeCloseTo(bucketSeconds(bucketOf(1.5)), 9);
    // Minutes without runs are zeros, one point per minute, oldest first, ending with the current one.
    for (const p of points.filter((x) => x !== point))
      expect([p.finished, p.failed, p.p50, p.p99]).toEqual([0, 0, undefined, undefined]);
    for (let i = 1; i < points.length; i++) expect(points[i]!.minuteMs - points[i - 1]!.minuteMs).toBe(60_000);
    expect(points.at(-1)!.minuteMs).toBe(Math.floor((await store.timeMs()) / 60_000) * 60_000);
    // The all-time counters still count as before.
    expect(await redis.client.hgetall(keys.statsKey(H))).toEqual({ finished: "30", failed: "10" });
  });

  it("counts failures that end without a run time (expired in the queue, worker lost) but times only reported runs", async () => {
    // A retried failure is not a failed task (it is counted as retried), and has no point either.
    const [retried] = await started(1, { maxAttempts: 2 });
    expect(await finish(retried!, "failed", 0.05, 60_000)).toBe("retry");
    expect(await minuteKeys()).toEqual([]);

    // A task whose queue ttl passed fails at the next fetch: a failure, without a run time.
    const { id } = await store.createTask({
      handler: H,
      paramsJson: "{}",
      timeout: 180,
      resultTtl: 60,
      failureTtl: 60,
      ttl: 60,
      maxAttempts: 1,
      maxQueued: 0,
      ip: "",
      uniqueKey: undefined,
    });
    await redis.client.hset(keys.taskKey(id), "drop_at", "1"); // its queue deadline passed long ago
    expect(await store.fetchTasks(H, 1, W, 60_000)).toEqual([]);
    expect((await store.getTasks([id]))[0]!.status).toBe("failed");
    // A running task whose lease lapsed fails in the sweep (no attempts left): the same.
    const [lost] = await started(1);
    await redis.client.zadd(keys.wipKey(H), 1, lost!.id); // its lease lapsed long ago
    const swept = await store.sweep(H, 0);
    expect(swept.lost).toBe(1);

    const total = (await store.queries.series(H, 3)).reduce(
      (sum, p) => ({
        failed: sum.failed + p.failed,
        finished: sum.finished + p.finished,
        timed: sum.timed || p.p50 !== undefined,
      }),
      { failed: 0, finished: 0, timed: false },
    );
    expect(total).toEqual({ failed: 2, finished: 0, timed: false });
    for (const key of await minuteKeys()) {
      expect(Object.keys(await redis.client.hgetall(key)).sort()).toEqual(["failed"]);
    }
  });

  it("expires every minute key when its minute leaves the window, and stays bounded whatever the traffic", async () => {
    // 300 runs with 300 different run times, from 0.1 ms to over a day, in batches.
    for (let batch = 0; batch < 3; batch++) {
      const tasks = await started(100);
      await Promise.all(tasks.map((t, i) => finish(t, "finished", 0.0001 * 1.09 ** (batch * 100 + i))));
    }
    const found = await minuteKeys();
    expect(found.length).toBeGreaterThanOrEqual(1);
    expect(found.length).toBeLessThanOrEqual(2); // the runs may straddle a minute's end
    const now = Math.floor((await store.timeMs()) / 1000);
    let fields = 0;
    for (const key of found) {
      const minute = Number(key.slice(key.lastIndexOf(":") + 1));
      const expireAt = now + (await redis.client.ttl(key));
      // Gone one minute after it left the last SERIES_MINUTES minutes.
      expect(Math.abs(expireAt - (minute + SERIES_MINUTES + 1) * 60)).toBeLessThanOrEqual(2);
      const hash = await redis.client.hgetall(key);
      expect(Object.keys(hash).length).toBeLessThanOrEqual(RUN_TIME_BUCKETS + 2);
      for (const name of Object.keys(hash)) expect(name).toMatch(/^(finished|failed|t\d{1,2})$/);
      fields += Object.keys(hash).length;
    }
    // Over a day's worth of run times fill most buckets, and the last bucket holds the longest.
    expect(fields).toBeGreaterThan(RUN_TIME_BUCKETS / 2);
    const all = await Promise.all(found.map((k) => redis.client.hget(k, `t${RUN_TIME_BUCKETS - 1}`)));
    expect(all.some((v) => Number(v) > 0)).toBe(true);
  });

  it("reads exactly the window asked for: the oldest kept minute is in it, the one before is not", async () => {
    const current = Math.floor((await store.timeMs()) / 60_000);
    // Minutes written as the scripts write them, near the edge of the window (the clock may turn).
    await redis.client.hset(keys.statsMinuteKey(H, current - SERIES_MINUTES + 3), "finished", "7", `t${bucketOf(0.2)}`, "7");
    await redis.client.hset(keys.statsMinuteKey(H, current - SERIES_MINUTES - 3), "finished", "9");
    const points = await store.queries.series(H, SERIES_MINUTES);
    expect(points).toHaveLength(SERIES_MINUTES);
    const shift = points.at(-1)!.minuteMs / 60_000 - current; // 0, or 1 if the minute turned
    expect(points[2 - shift]).toMatchObject({ minuteMs: (current - SERIES_MINUTES + 3) * 60_000, finished: 7 });
    expectWithinResolution(points[2 - shift]!.p50, 0.2);
    expect(points.reduce((sum, p) => sum + p.finished, 0)).toBe(7);
    expect((await store.queries.series(H, 1)).length).toBe(1);
  });
});

describe("GetQueueSeries", () => {
  const SLOW = "/series_test/slow";
  const ROOT = "root-token-0123456789";
  const NARROW = `narrow-token-0123456789=${SLOW}`;
  let svc: TestService;
  const admin = () => createClient(AdminService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));
  const as = (token: string) => ({ headers: { authorization: `Bearer ${token.split("=")[0]}` } });

  beforeAll(async () => {
    svc = await startService({
      handlers: {
        // Takes the time it is told to, then finishes or fails (no retry: one attempt).
        [SLOW]: async (params: unknown) => {
          const { ms, fail } = params as { ms: number; fail?: boolean };
          await new Promise((resolve) => setTimeout(resolve, ms));
          if (fail) throw new Error("failed on purpose");
          return { slept: ms };
        },
      },
      worker: { concurrency: 8 },
      authTokens: [ROOT, NARROW],
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it("answers runs per minute of handlers that take known times: counts by ended_at, percentiles by cost", async () => {
    const items = [
      ...Array.from({ length: 12 }, () => ({ handler: SLOW, params: { ms: 40 } })),
      ...Array.from({ length: 6 }, () => ({ handler: SLOW, params: { ms: 250 } })),
      ...Array.from({ length: 4 }, () => ({ handler: SLOW, params: { ms: 120, fail: true } })),
    ];
    const created = await svc.bc.enqueueMany(items);
    const ids = created.map((c) => (c instanceof Error ? "" : c.id));
    const ended = await eventually(async () => {
      const tasks = await Promise.all(ids.map((id) => svc.bc.getTask(id)));
      return tasks.every((t) => t.status === "finished" || t.status === "failed") ? tasks : undefined;
    });
    const { points } = await admin().getQueueSeries({ handler: SLOW, minutes: 10 }, as(ROOT));
    expect(points).toHaveLength(10);
    for (const p of points) {
      const minute = timestampMs(p.minute!) / 60_000;
      const here = ended.filter((t) => minuteOf(t.endedAt) === minute);
      expect(Number(p.finished), `minute ${minute}`).toBe(here.filter((t) => t.status === "finished").length);
      expect(Number(p.failed), `minute ${minute}`).toBe(here.filter((t) => t.status === "failed").length);
      if (here.length === 0) {
        expect(p.runTimeP50).toBeUndefined();
        continue;
      }
      const costs = here.map((t) => t.cost);
      expectWithinResolution(durationMs(p.runTimeP50!) / 1000, exactPercentile(costs, 0.5));
      expectWithinResolution(durationMs(p.runTimeP95!) / 1000, exactPercentile(costs, 0.95));
      expectWithinResolution(durationMs(p.runTimeP99!) / 1000, exactPercentile(costs, 0.99));
    }
    const sum = (f: (p: (typeof points)[number]) => bigint) => points.reduce((s, p) => s + Number(f(p)), 0);
    expect([sum((p) => p.finished), sum((p) => p.failed)]).toEqual([18, 4]);
    // The run times are those slept (and a little more): the slowest runs are the 250 ms ones.
    const slowest = Math.max(...points.filter((p) => p.runTimeP99).map((p) => durationMs(p.runTimeP99!)));
    expect(slowest).toBeGreaterThan(250 / (1 + RUN_TIME_RESOLUTION));
    expect(slowest).toBeLessThan(2000);
  });

  it("reads 60 minutes by default and 1,440 at most; refuses more, and a bad handler, changing nothing", async () => {
    expect((await admin().getQueueSeries({ handler: SLOW }, as(ROOT))).points).toHaveLength(60);
    const day = await admin().getQueueSeries({ handler: "/series_test/idle", minutes: SERIES_MINUTES }, as(ROOT));
    expect(day.points).toHaveLength(SERIES_MINUTES);
    expect(day.points.every((p) => p.finished === 0n && p.failed === 0n && p.runTimeP50 === undefined)).toBe(true);
    const before = await svc.redis.client.dbsize();
    for (const req of [
      { handler: SLOW, minutes: SERIES_MINUTES + 1 },
      { handler: SLOW, minutes: 4_000_000_000 },
      { handler: "no-slash", minutes: 5 },
      { handler: "", minutes: 5 },
      { handler: `/${"x".repeat(300)}/y`, minutes: 5 },
    ]) {
      expect(await codeOf(admin().getQueueSeries(req, as(ROOT))), JSON.stringify(req).slice(0, 60)).toBe(Code.InvalidArgument);
    }
    expect(await svc.redis.client.dbsize()).toBe(before);
  });

  it("needs a token that covers the handler", async () => {
    expect(await codeOf(admin().getQueueSeries({ handler: SLOW }))).toBe(Code.Unauthenticated);
    expect(await codeOf(admin().getQueueSeries({ handler: SLOW }, as("wrong-token-0123456789")))).toBe(Code.Unauthenticated);
    expect(await codeOf(admin().getQueueSeries({ handler: "/series_test/other" }, as(NARROW)))).toBe(Code.PermissionDenied);
    expect((await admin().getQueueSeries({ handler: SLOW, minutes: 2 }, as(NARROW))).points).toHaveLength(2);
  });
});
