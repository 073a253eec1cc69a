/**
 * Handlers that would take their process down, run by the real service binary: process.exit(),
 * errors thrown on timers and promises left rejected after a run, a process ended by something
 * else while handlers run, a handler that kills its process every time (a poison task), and a
 * result too large to store.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BaiChuan } from "../src/engine/baichuan.js";
import { taskKey } from "../src/store/keys.js";
import { freePort } from "./support/net.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { postJson } from "./support/service.js";
import { observer, startWorker } from "./support/workers.js";

let redis: TestRedis;
let bc: BaiChuan;
beforeAll(async () => {
  redis = await startRedis();
  bc = await observer(redis);
});
afterAll(async () => {
  await bc?.close();
  await redis?.destroy();
});

/** The JSON log lines of a process's output. */
function logLines(output: string): Array<Record<string, unknown>> {
  return output.split("\n").flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

describe("a handler that would end its process", () => {
  it("process.exit(0) fails the run with a clear error; the process goes on and runs the next task", async () => {
    const w = startWorker(redis);
    try {
      await w.waitFor(/"worker started"/, 60_000);
      const { id } = await bc.enqueue("/faults/exit", { code: 0 });
      const task = await bc.wait(id, { timeoutMs: 60_000 });
      expect(task).toMatchObject({ status: "failed", errorCode: "ERR_SERVER_EXCEPTION" });
      expect(task.error).toMatch(/process\.exit\(0\).*may not end the process/);
      const next = await bc.wait((await bc.enqueue("/faults/sleep", { ms: 1 })).id, { timeoutMs: 60_000 });
      expect(next).toMatchObject({ status: "finished", result: { pid: w.child.pid } });
      expect(w.child.exitCode).toBe(null);
    } finally {
      w.kill("SIGKILL");
      await w.exited;
    }
  }, 120_000);

  it("called synchronously over HTTP, process.exit() answers ERR_SERVER_EXCEPTION and the process goes on", async () => {
    const port = await freePort();
    const w = startWorker(redis, { BAICHUAN_API: "1", BAICHUAN_PORT: String(port), BAICHUAN_HOST: "127.0.0.1" });
    try {
      await w.waitFor(/"listening"/, 60_000);
      const { json } = await postJson(`http://127.0.0.1:${port}`, "/faults/exit", { code: 0 });
      expect(json).toMatchObject({ stat: "ERR_SERVER_EXCEPTION" });
      expect(json.error).toMatch(/may not end the process/);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      w.kill("SIGKILL");
      await w.exited;
    }
  });

  it("an error thrown on a timer and a promise left rejected are logged with the task id, not fatal", async () => {
    const w = startWorker(redis);
    try {
      await w.waitFor(/"worker started"/, 60_000);
      const { id } = await bc.enqueue("/faults/stray", {});
      expect(await bc.wait(id, { timeoutMs: 60_000 })).toMatchObject({ status: "finished", result: { pid: w.child.pid } });
      await w.waitFor(/stray error from a timer/, 90_000);
      await w.waitFor(/stray rejection/, 90_000);
      const lines = logLines(w.output());
      const thrown = lines.find((l) => l.msg === "a handler threw outside its run (from a timer or callback)");
      const rejected = lines.find((l) => l.msg === "a handler left a promise rejected");
      expect(thrown).toMatchObject({ task_id: id, handler: "/faults/stray" });
      expect(rejected).toMatchObject({ task_id: id, handler: "/faults/stray" });
      const next = await bc.wait((await bc.enqueue("/faults/sleep", { ms: 1 })).id, { timeoutMs: 60_000 });
      expect(next).toMatchObject({ status: "finished", result: { pid: w.child.pid } });
    } finally {
      w.kill("SIGKILL");
      await w.exited;
    }
  }, 120_000);

  it("a process ended with code 0 by other code while handlers run exits with code 1", async () => {
    const w = startWorker(redis);
    try {
      await w.waitFor(/"worker started"/, 60_000);
      const { id } = await bc.enqueue("/faults/sleep", { ms: 600_000 });
      for await (const task of bc.watch(id)) if (task.status === "started") break;
      w.kill("SIGUSR2"); // the fixture module's listener calls process.exit(0)
      expect(await w.exited).toBe(1);
      expect(w.output()).toMatch(/exiting while handlers run/);
    } finally {
      w.kill("SIGKILL");
    }
  }, 120_000);
});

describe("a poison task", () => {
  it("a task whose worker is lost 3 times ends FAILED with ERR_POISON_TASK, though attempts are left", async () => {
    const { id } = await bc.enqueue("/faults/die", {}, { maxAttempts: 10 });
    const exits: Array<NodeJS.Signals | null> = [];
    // Each worker takes the task (after the sweep gave it back) and dies of it.
    for (let i = 0; i < 3; i++) {
      const w = startWorker(redis);
      await w.exited;
      exits.push(w.child.signalCode);
    }
    expect(exits).toEqual(["SIGKILL", "SIGKILL", "SIGKILL"]);
    let task = await bc.getTask(id);
    for await (const t of bc.watch(id)) task = t; // the sweep ends it
    expect(task).toMatchObject({ status: "failed", errorCode: "ERR_POISON_TASK", attempts: 3, maxAttempts: 10 });
    expect(task.error).toMatch(/lost 3 times/);
    // A fourth worker has nothing to die of.
    const w = startWorker(redis);
    try {
      await w.waitFor(/"worker started"/, 60_000);
      expect(await bc.wait((await bc.enqueue("/faults/sleep", { ms: 1 })).id, { timeoutMs: 60_000 })).toMatchObject({
        status: "finished",
      });
      expect(w.child.exitCode).toBe(null);
    } finally {
      w.kill("SIGKILL");
      await w.exited;
    }
  }, 240_000);
});

describe("a result too large to store", () => {
  it("fails the task with a clear error, without a retry, and stores nothing of it", async () => {
    const w = startWorker(redis);
    try {
      await w.waitFor(/"worker started"/, 60_000);
      const { id } = await bc.enqueue("/faults/big", { mb: 30 }, { maxAttempts: 3 });
      const task = await bc.wait(id, { timeoutMs: 60_000 });
      expect(task).toMatchObject({ status: "failed", errorCode: "ERR_SERVER_EXCEPTION", attempts: 1 });
      expect(task.error).toMatch(/^result: is 314572\d\d bytes as JSON; the limit is 1048576$/);
      expect(await redis.client.memory("USAGE", taskKey(id))).toBeLessThan(10_000);
      // Just under the limit is fine.
      const fits = await bc.wait((await bc.enqueue("/faults/big", { mb: 0.99 })).id, { timeoutMs: 60_000 });
      expect(fits.status).toBe("finished");
    } finally {
      w.kill("SIGKILL");
      await w.exited;
    }
  }, 120_000);
});
