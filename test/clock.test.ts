/**
 * One clock: leases, due times and queue deadlines follow Redis's clock, so a process whose clock
 * is wrong (here by 30 s, either way) neither takes tasks from a healthy worker nor loses its own.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { durationFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createTaskClient } from "../src/client.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import { freePort } from "./support/net.js";
import type { ServiceProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { FAULT_HANDLERS, startWorker } from "./support/workers.js";

const SKEW = pathToFileURL(resolve("test/fixtures/skew.mjs")).href;

/** A worker process whose Date.now() is off by `ms`. */
function skewedWorker(redis: TestRedis, ms: number, env: Record<string, string> = {}): ServiceProcess {
  return startWorker(redis, { NODE_OPTIONS: `--import ${SKEW}`, CLOCK_SKEW_MS: String(ms), ...env });
}

let redis: TestRedis;
let bc: BaiChuan;
const procs: ServiceProcess[] = [];
beforeEach(async () => {
  redis = await startRedis();
  bc = await BaiChuan.connect({ redis: redis.url });
});
afterEach(async () => {
  for (const p of procs.splice(0)) p.kill("SIGKILL");
  await bc?.close(100); // the in-process worker's long tasks are aborted at once
  await redis?.destroy();
});

describe("a process with a wrong clock", () => {
  it("30 s ahead, its sweeps leave a healthy worker's running tasks alone", async () => {
    // The healthy worker runs in this process (and no sweeper here): the skewed process below is
    // the only one that sweeps.
    await bc.handlers.loadDirectory(FAULT_HANDLERS);
    await bc.startWorker({ leaseMs: 2000 });
    const ids = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => (await bc.enqueue("/faults/sleep", { ms: 600_000, i }, { maxAttempts: 2 })).id),
    );
    for (const id of ids) for await (const t of bc.watch(id)) if (t.status === "started") break;
    const before = await Promise.all(ids.map((id) => bc.getTask(id)));

    // The skewed process sweeps (it logs each sweep it makes at debug level): by its clock every
    // lease above lapsed 28 s ago, and its handlers (the same) make it sweep them. Its first sweeps fall within a lease of its connecting, when no
    // lease is recovered anyway; four of them span more than a lease.
    const ahead = skewedWorker(redis, 30_000, { BAICHUAN_LOG_LEVEL: "debug", BAICHUAN_LEASE_SECONDS: "2" });
    procs.push(ahead);
    await ahead.waitFor(/"msg":"sweeping"/, 120_000, 4);

    const after = await Promise.all(ids.map((id) => bc.getTask(id)));
    for (const [i, task] of after.entries()) {
      expect(task).toMatchObject({ status: "started", attempts: 1, worker: before[i]!.worker });
      expect(task.startedAt).toBe(before[i]!.startedAt);
    }
    expect(ahead.output()).not.toMatch(/"msg":"swept"/);
  }, 240_000);

  it("30 s behind, its own tasks run once: a healthy sweeper does not see their leases as lapsed", async () => {
    const behind = skewedWorker(redis, -30_000, { BAICHUAN_LEASE_SECONDS: "2" });
    procs.push(behind);
    await behind.waitFor(/"worker started"/, 60_000);
    bc.startSweeper({ periodMs: 250, leaseMs: 2000 });
    const ids = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => (await bc.enqueue("/faults/sleep", { ms: 4000, i }, { maxAttempts: 2 })).id),
    );
    const tasks = await Promise.all(ids.map((id) => bc.wait(id, { timeoutMs: 120_000 })));
    for (const task of tasks) expect(task).toMatchObject({ status: "finished", attempts: 1 });
  }, 240_000);

  it("a delay asked of a process 30 s ahead counts from Redis's clock", async () => {
    const port = await freePort();
    const ahead = skewedWorker(redis, 30_000, { BAICHUAN_API: "1", BAICHUAN_PORT: String(port), BAICHUAN_HOST: "127.0.0.1" });
    procs.push(ahead);
    await ahead.waitFor(/"worker started"/, 60_000);
    const client = createTaskClient(`http://127.0.0.1:${port}`);
    const { taskId } = await client.createTask({
      handler: "/faults/sleep",
      params: { ms: 1 },
      options: { delay: durationFromMs(2000) },
    });
    const [seconds] = await redis.client.time();
    const due = timestampMs((await client.getTask({ taskId })).task!.scheduledFor!);
    // Due 2 s after the create by Redis's clock (a loaded machine may take a few seconds between
    // the create and the TIME above): not 32 s.
    expect(Math.abs(due - (Number(seconds) * 1000 + 2000))).toBeLessThan(10_000);
    expect((await bc.wait(taskId, { timeoutMs: 60_000 })).status).toBe("finished");
  });

  it("a retry waits its delay by Redis's clock, though the failing worker's clock is 30 s behind", async () => {
    const behind = skewedWorker(redis, -30_000, { BAICHUAN_RETRY_BASE_MS: "2000" });
    procs.push(behind);
    await behind.waitFor(/"worker started"/, 60_000);
    bc.startSweeper({ periodMs: 250, leaseMs: 1000 }); // a healthy process promotes due retries too
    const { id } = await bc.enqueue("/faults/flaky", { key: "retry-clock" }, { maxAttempts: 2 });
    const task = await bc.wait(id, { timeoutMs: 120_000 });
    // The first retry waits 1 to 2 s (base 2 s, halved by jitter); the handler measures the wait
    // between its two runs on its own (skewed but steady) clock.
    expect(task).toMatchObject({ status: "finished", attempts: 2 });
    expect((task.result as { waitedMs: number }).waitedMs).toBeGreaterThanOrEqual(900);
  }, 240_000);
});
