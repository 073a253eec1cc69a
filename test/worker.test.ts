/**
 * The worker through the real entry points (startService -> BaiChuan.startWorker): concurrency,
 * timeouts, handler outcomes, TTLs, queue ttl, push-based pickup, deleted tasks, several processes
 * on one queue, and loading handlers from a directory.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Task } from "../src/core/domain.js";
import { BadParamsError, TaskNotFoundError } from "../src/core/errors.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import { queueKey, taskKey, wipKey } from "../src/store/keys.js";
import type { Handler, HandlerContext } from "../src/worker/handlers.js";
import type { WorkerOptions } from "../src/worker/worker.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually, gate, startService, type TestService } from "./support/service.js";
import { sleep } from "./support/time.js";

let redis: TestRedis;
const services: TestService[] = [];
const tmpDirs: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await Promise.all(services.splice(0).map((s) => s.close()));
  for (const dir of tmpDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
afterAll(async () => {
  await redis?.destroy();
});

/** A service on the shared Redis with only these handlers; its worker runs unless `worker: false`. */
async function service(
  handlers: Record<string, Handler>,
  worker: boolean | WorkerOptions = true,
  on = redis,
): Promise<TestService> {
  const svc = await startService({ redis: on, demo: false, handlers, worker });
  services.push(svc);
  return svc;
}

/** Now by Redis's clock (TIME), epoch ms: the clock queue deadlines are kept by. */
async function redisNowMs(): Promise<number> {
  const [seconds, micros] = (await redis.client.call("TIME")) as [string, string];
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

async function waitAll(bc: BaiChuan, ids: string[], timeoutMs = 10_000): Promise<Task[]> {
  return Promise.all(ids.map((id) => bc.wait(id, { timeoutMs })));
}

describe("concurrency", () => {
  it("runs at most `concurrency` tasks at once, and all of them", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const runs = new Map<string, number>();
    const hold = gate();
    const svc = await service(
      {
        "/w/counted": async (_p, ctx) => {
          runs.set(ctx.taskId, (runs.get(ctx.taskId) ?? 0) + 1);
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          await hold.opened;
          // A bounded look: each run keeps its slot a moment longer, so that a worker starting more
          // than `concurrency` tasks would be seen doing so.
          await sleep(5);
          inFlight--;
          return { ok: true };
        },
      },
      { concurrency: 3 },
    );
    const ids = await Promise.all(Array.from({ length: 12 }, (_, i) => svc.bc.enqueue("/w/counted", { i }).then((r) => r.id)));
    // Three start and block; a fourth must not start however long we look (a bounded look: 200 ms).
    await eventually(() => inFlight === 3);
    await sleep(200);
    expect(inFlight).toBe(3);
    expect(runs.size).toBe(3);

    hold.open();
    const tasks = await waitAll(svc.bc, ids);
    expect(tasks.map((t) => t.status)).toEqual(ids.map(() => "finished"));
    expect(maxInFlight).toBe(3);
    expect([...runs.keys()].sort()).toEqual([...ids].sort());
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
  });
});

describe("per-task timeout", () => {
  it("aborts the handler's signal and fails the task with ERR_TIMEOUT", async () => {
    let seen: AbortSignal | undefined;
    const svc = await service({
      "/w/waits": (_p, ctx) =>
        new Promise((_resolve, reject) => {
          seen = ctx.signal;
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        }),
    });
    const { id } = await svc.bc.enqueue("/w/waits", {}, { timeout: 0.3 });
    const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "failed", errorCode: "ERR_TIMEOUT" });
    expect(task.error).toMatch(/timeout/);
    expect(seen?.aborted).toBe(true);
  });

  it("fails a handler that ignores its signal at the timeout, and its late return changes nothing", async () => {
    const release = gate();
    const returned = gate();
    let handlerReturned = false;
    let signalAborted = false;
    const svc = await service({
      "/w/stubborn": async (_p, ctx) => {
        await release.opened; // ignores its signal: returns only when the test lets it
        signalAborted = ctx.signal.aborted;
        handlerReturned = true;
        returned.open();
        return { late: true };
      },
    });
    const { id } = await svc.bc.enqueue("/w/stubborn", {}, { timeout: 0.3 });
    const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
    expect(task).toMatchObject({ status: "failed", errorCode: "ERR_TIMEOUT" });
    // The timeout ended the task while the handler was still running.
    expect(handlerReturned).toBe(false);

    release.open();
    await returned.opened;
    // A bounded look: the late return must not change the stored task in the next 50 ms either.
    await sleep(50);
    expect(signalAborted).toBe(true);
    expect(await svc.bc.getTask(id)).toMatchObject({ status: "failed", errorCode: "ERR_TIMEOUT" });
  });
});

describe("handler outcomes", () => {
  const cyclic = () => {
    const a: Record<string, unknown> = { name: "a" };
    a.self = a;
    return a;
  };
  const cases: Array<{ name: string; fn: Handler; expected: Partial<Task>; error?: RegExp }> = [
    { name: "returns an object", fn: () => ({ n: 1 }), expected: { status: "finished", result: { n: 1 } } },
    { name: "resolves a promise", fn: async () => [1, "two"], expected: { status: "finished", result: [1, "two"] } },
    { name: "returns undefined", fn: () => undefined, expected: { status: "finished", result: null } },
    {
      name: "throws BadParamsError",
      fn: () => {
        throw new BadParamsError("x must be a number");
      },
      expected: { status: "failed", errorCode: "ERR_BAD_PARAMS", error: "x must be a number" },
    },
    {
      name: "rejects with BadParamsError",
      fn: async () => {
        throw new BadParamsError("async bad");
      },
      expected: { status: "failed", errorCode: "ERR_BAD_PARAMS", error: "async bad" },
    },
    {
      name: "throws an Error",
      fn: () => {
        throw new Error("boom");
      },
      expected: { status: "failed", errorCode: "ERR_SERVER_EXCEPTION", error: "boom" },
    },
    {
      name: "throws a non-Error",
      fn: () => {
        throw "just a string";
      },
      expected: { status: "failed", errorCode: "ERR_SERVER_EXCEPTION" },
      error: /just a string/,
    },
    {
      name: "throws a Proxy whose every trap throws",
      fn: () => {
        const hostile = () => {
          throw new Error("trap");
        };
        throw new Proxy({}, { get: hostile, getPrototypeOf: hostile, has: hostile, ownKeys: hostile });
      },
      expected: { status: "failed", errorCode: "ERR_SERVER_EXCEPTION" },
    },
    {
      name: "returns a BigInt",
      fn: () => 10n,
      expected: { status: "failed", errorCode: "ERR_SERVER_EXCEPTION" },
      error: /not JSON.*BigInt/,
    },
    {
      name: "returns a cyclic object",
      fn: cyclic,
      expected: { status: "failed", errorCode: "ERR_SERVER_EXCEPTION" },
      error: /not JSON.*circular/i,
    },
  ];

  let svc: TestService;
  beforeAll(async () => {
    // Outside `services`, so afterEach does not close it between the table's rows.
    svc = await startService({
      redis,
      demo: false,
      handlers: Object.fromEntries(cases.map((c, i) => [`/w/outcome_${i}`, c.fn])),
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it.each(cases.map((c, i) => ({ ...c, handler: `/w/outcome_${i}` })))(
    "a handler that $name",
    async ({ handler, expected, error }) => {
      const { id } = await svc.bc.enqueue(handler, {});
      const task = await svc.bc.wait(id, { timeoutMs: 60_000 });
      expect(task).toMatchObject(expected);
      if (error) expect(task.error).toMatch(error);
      if (task.status === "finished") expect(JSON.parse(task.rawResult!)).toEqual({ stat: "OK", data: expected.result });
      else expect(JSON.parse(task.rawResult!)).toEqual({ stat: expected.errorCode, error: task.error });
      expect(task.rawResult).not.toMatch(/\n\s+at /); // no stack trace is stored
    },
  );
});

describe("result_ttl and failure_ttl", () => {
  it.each([
    { outcome: "finished", option: { resultTtl: 1 } },
    { outcome: "failed", option: { failureTtl: 1 } },
  ] as const)("a $outcome task has no TTL until it ends, then lives $option", async ({ outcome, option }) => {
    const release = gate();
    const handler = `/w/ttl_${outcome}`;
    const svc = await service(
      {
        [handler]: async () => {
          await release.opened;
          if (outcome === "failed") throw new Error("failing on purpose");
          return "done";
        },
      },
      false,
    );
    // A long other TTL proves the right one is applied.
    const { id } = await svc.bc.enqueue(handler, {}, { resultTtl: 3600, failureTtl: 3600, ...option });
    const key = taskKey(id);
    expect(await svc.bc.getTask(id)).toMatchObject({ status: "queued" });
    expect(await redis.client.ttl(key)).toBe(-1);

    await svc.bc.startWorker({ port: svc.server.port });
    await eventually(async () => (await svc.bc.getTask(id)).status === "started");
    expect(await redis.client.ttl(key)).toBe(-1);

    release.open();
    expect((await svc.bc.wait(id, { timeoutMs: 60_000 })).status).toBe(outcome);
    const pttl = await redis.client.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1000);

    // Redis expires the key when its TTL runs out.
    await eventually(async () => (await redis.client.exists(key)) === 0, 60_000);
    await expect(svc.bc.getTask(id)).rejects.toBeInstanceOf(TaskNotFoundError);
    expect(await svc.bc.exists(id)).toBe(false);
  });
});

describe("queue ttl", () => {
  it("a task that waited longer than its ttl fails with ERR_MSG_EXPIRED and never runs", async () => {
    const ran: string[] = [];
    const svc = await service({ "/w/late": (_p, ctx) => void ran.push(ctx.taskId) }, false);
    const expired = await svc.bc.enqueue("/w/late", { which: "expired" }, { ttl: 0.3 });
    const inTime = await svc.bc.enqueue("/w/late", { which: "in time" }, { ttl: 30 });
    // Until the first one's queue deadline (drop_at, by Redis's clock) has passed.
    const dropAt = Number(await redis.client.hget(taskKey(expired.id), "drop_at"));
    expect(dropAt).toBeGreaterThan(0);
    await eventually(async () => (await redisNowMs()) > dropAt, 60_000);
    await svc.bc.startWorker({ port: svc.server.port });

    const [a, b] = await waitAll(svc.bc, [expired.id, inTime.id]);
    expect(a).toMatchObject({ status: "failed", errorCode: "ERR_MSG_EXPIRED" });
    expect(a!.startedAt).toBeUndefined();
    expect(b).toMatchObject({ status: "finished" });
    expect(ran).toEqual([inTime.id]);
    // The expired task is kept for its failure TTL, like any failure.
    expect(await redis.client.ttl(taskKey(expired.id))).toBeGreaterThan(0);
  });
});

describe("push-based pickup", () => {
  /** Calls per command from INFO commandstats. */
  async function commandCalls(client: TestRedis["client"]): Promise<Map<string, number>> {
    const info = await client.info("commandstats");
    const calls = new Map<string, number>();
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1]!, Number(m[2]));
    return calls;
  }

  it("an idle worker sends Redis no fetches (no polling), and still picks up work at once", async () => {
    const own = await startRedis(); // no other test's traffic in the counts
    try {
      const warmEnded = gate();
      // The lease keeper's renewals (every lease/4) and heartbeats are scripts too: with a 2-minute
      // lease and a 10-minute heartbeat, none comes before the look below is over.
      const svc = await service(
        { "/w/idle_a": () => "a", "/w/idle_b": () => "b" },
        { concurrency: 4, leaseMs: 120_000, heartbeatMs: 600_000, onTaskEnd: () => warmEnded.open() },
        own,
      );
      // Start-up settles (initial fetch of each queue, first heartbeat) before a first task runs;
      // its end is recorded together with the worker's next fetch, which finds the queue empty.
      await svc.bc.enqueue("/w/idle_a", {});
      await warmEnded.opened;

      const before = await commandCalls(own.client);
      // A bounded look: no fetch in the next 2 s.
      await sleep(2000);
      const after = await commandCalls(own.client);
      const changed = [...after].filter(([cmd, n]) => n !== (before.get(cmd) ?? 0)).map(([cmd]) => cmd);
      // Only our own INFO calls (MULTI/HSET/EXPIRE/SADD/EXEC allowed: no fetch or script uses them).
      expect(changed.filter((cmd) => !["info", "multi", "hset", "expire", "sadd", "exec"].includes(cmd))).toEqual([]);
      expect(after.get("evalsha") ?? 0).toBe(before.get("evalsha") ?? 0);
      expect(after.get("eval") ?? 0).toBe(before.get("eval") ?? 0);

      // Still alive: a new task on either queue is picked up (by a wake-up, not a poll).
      const ids = [(await svc.bc.enqueue("/w/idle_a", {})).id, (await svc.bc.enqueue("/w/idle_b", {})).id];
      expect((await waitAll(svc.bc, ids, 5000)).map((t) => t.result)).toEqual(["a", "b"]);
      expect((await commandCalls(own.client)).get("evalsha")!).toBeGreaterThan(before.get("evalsha") ?? 0);
    } finally {
      await Promise.all(services.splice(0).map((s) => s.close()));
      await own.destroy();
    }
  });
});

describe("a task deleted while it runs", () => {
  it("is not brought back when its handler returns", async () => {
    const release = gate();
    const returned = gate();
    const svc = await service({
      "/w/deleted": async () => {
        await release.opened;
        returned.open();
        return { written: "never" };
      },
    });
    const { id } = await svc.bc.enqueue("/w/deleted", {});
    await eventually(async () => (await svc.bc.getTask(id)).status === "started");
    expect(await redis.client.zscore(wipKey("/w/deleted"), id)).not.toBeNull();

    expect(await redis.client.del(taskKey(id))).toBe(1);
    release.open();
    await returned.opened;
    // The worker's end-of-task step drops the id from the running set; after it, the key is still gone.
    await eventually(async () => (await redis.client.zcard(wipKey("/w/deleted"))) === 0);
    expect(await redis.client.exists(taskKey(id))).toBe(0);
    await expect(svc.bc.getTask(id)).rejects.toBeInstanceOf(TaskNotFoundError);
  });
});

describe("which queues a worker consumes", () => {
  it("only those of its own handlers; another process's handler stays queued until that process runs it", async () => {
    const svc = await service({ "/w/mine": () => "mine" });
    const theirs = await svc.bc.enqueue("/w/theirs", {});
    const mine = await svc.bc.enqueue("/w/mine", {});
    expect((await svc.bc.wait(mine.id, { timeoutMs: 60_000 })).result).toBe("mine");
    // A bounded look: the other handler's task is not taken in the next 200 ms.
    await sleep(200);
    expect(await svc.bc.getTask(theirs.id)).toMatchObject({ status: "queued", worker: "" });
    expect(await redis.client.lrange(queueKey("/w/theirs"), 0, -1)).toEqual([theirs.id]);

    const other = await service({ "/w/theirs": () => "theirs" });
    const done = await svc.bc.wait(theirs.id, { timeoutMs: 60_000 });
    expect(done).toMatchObject({
      status: "finished",
      result: "theirs",
      worker: `${hostname()}:${other.server.port}:${process.pid}`,
    });
  });

  it("two services on one queue run each task exactly once, and both take part", async () => {
    const runs = new Map<string, number>();
    const byWorker = new Map<number, number>();
    const hold = gate();
    let holding = true;
    const make =
      (port: () => number): Handler =>
      async (_p, ctx: HandlerContext) => {
        runs.set(ctx.taskId, (runs.get(ctx.taskId) ?? 0) + 1);
        byWorker.set(port(), (byWorker.get(port()) ?? 0) + 1);
        if (holding) await hold.opened;
        return ctx.taskId;
      };
    let portA = 0;
    let portB = 0;
    const a = await service({ "/w/shared": make(() => portA) }, { concurrency: 2 });
    const b = await service({ "/w/shared": make(() => portB) }, { concurrency: 2 });
    portA = a.server.port;
    portB = b.server.port;

    // Four held tasks, two slots each: both services must hold two.
    const held = await Promise.all(Array.from({ length: 4 }, () => a.bc.enqueue("/w/shared", {}).then((r) => r.id)));
    await eventually(() => byWorker.get(portA) === 2 && byWorker.get(portB) === 2);
    holding = false;
    hold.open();

    const more = await Promise.all(Array.from({ length: 60 }, (_, i) => b.bc.enqueue("/w/shared", { i }).then((r) => r.id)));
    const all = [...held, ...more];
    const tasks = await waitAll(a.bc, all);
    expect(tasks.map((t) => t.result)).toEqual(all);
    expect(runs.size).toBe(all.length);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    const names = new Set(tasks.map((t) => t.worker));
    expect([...names].every((n) => n.endsWith(`:${portA}:${process.pid}`) || n.endsWith(`:${portB}:${process.pid}`))).toBe(true);
  });
});

// Loading and naming handlers: test/unit/engine.test.ts.
describe("handlers loaded from a directory", () => {
  function handlerDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), "baichuan-handlers-"));
    tmpDirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  }

  it("runs handlers loaded from a directory", async () => {
    const dir = handlerDir({ "calc.mjs": "export function mul(p) { return { product: p.a * p.b }; }" });
    const bc = await BaiChuan.connect({ redis: redis.url });
    try {
      await bc.handlers.loadDirectory(dir);
      await bc.startWorker({ port: 42_424 });
      const { id } = await bc.enqueue("/calc/mul", { a: 6, b: 7 });
      expect(await bc.wait(id, { timeoutMs: 60_000 })).toMatchObject({ status: "finished", result: { product: 42 } });
    } finally {
      await bc.close(500);
    }
  });
});

describe("a caller's onTaskEnd hook", () => {
  it("that throws does not stop the worker: the error is logged and later tasks still run", async () => {
    let calls = 0;
    const svc = await service(
      { "/hook_test/ok": () => 1 },
      {
        onTaskEnd: () => {
          calls++;
          throw new Error("the hook failed");
        },
      },
    );
    const first = await svc.bc.enqueue("/hook_test/ok", { n: 1 });
    expect((await svc.bc.wait(first.id, { timeoutMs: 60_000 })).status).toBe("finished");
    const second = await svc.bc.enqueue("/hook_test/ok", { n: 2 });
    expect((await svc.bc.wait(second.id, { timeoutMs: 60_000 })).status).toBe("finished");
    // The hook runs once the end is stored, which the waiter may hear of first.
    await eventually(() => calls === 2);
    expect(calls).toBe(2);
  });
});
