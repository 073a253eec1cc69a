/**
 * Flow control: a handler's rate limit, running limit and pause, obeyed by every process at once.
 * Three worker processes (the real service binary, test/fixtures/handlers) share one Redis with an
 * API-only service in this process (AdminService, the legacy URLs, the command line, creates).
 * Times are the tasks' own started_at / ended_at, by Redis's clock. Held tasks stay QUEUED and
 * nobody polls (counted with MONITOR). Each test leaves the handler's limits as it found them.
 */
import { execFile } from "node:child_process";
import { type Client, Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AdminService, type QueueInfo } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { main } from "../src/cli/main.js";
import type { Task } from "../src/core/domain.js";
import * as keys from "../src/store/keys.js";
import { SCRIPTS } from "../src/store/scripts.js";
import { mostAtOnce, steadyRate } from "./support/flow.js";
import { type ServiceProcess, startProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { codeOf, eventually, getJson, postJson, startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";
import { msFromIso, sleep } from "./support/time.js";
import { startWorker } from "./support/workers.js";

const SLEEP = "/faults/sleep"; // waits params.ms; every worker process has it
const WORK = "/flow/work"; // test/fixtures/flow-handlers: only the process a test starts has it
const PACED = "/flow/paced";
const ROOT = "root-token-0123456789";
const NARROW = "narrow-token-0123456789";
const NONE = { ratePerSecond: 0, burst: 0, maxRunning: 0, maxRunningPerKey: 0 };

let redis: TestRedis;
let svc: TestService; // API only (no worker), in this process
let authed: TestService; // the same, with tokens (NARROW covers /other/* only)
let workers: ServiceProcess[] = [];
let admin: Client<typeof AdminService>;

beforeAll(async () => {
  redis = await startRedis();
  workers = [0, 1, 2].map(() => startWorker(redis, { BAICHUAN_CONCURRENCY: "10" }));
  svc = await startService({ redis, demo: false, worker: false });
  authed = await startService({ redis, demo: false, worker: false, authTokens: [ROOT, `${NARROW}=/other/*`] });
  admin = createClient(AdminService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));
  await Promise.all(workers.map((w) => w.waitFor(/"worker started"/)));
}, 120_000);

afterAll(async () => {
  for (const w of workers) w.kill("SIGKILL");
  await authed?.close();
  await svc?.close();
  await redis?.destroy();
});

afterEach(async () => {
  for (const handler of [SLEEP, WORK, PACED]) {
    await admin.emptyQueue({ handler, status: TaskStatus.QUEUED });
    await redis.client.del(keys.limitsKey(handler), keys.bucketKey(handler)); // as if never limited
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers

async function enqueue(count: number, params: Record<string, unknown>, handler = SLEEP): Promise<string[]> {
  const results = await svc.bc.enqueueMany(Array.from({ length: count }, () => ({ handler, params })));
  return results.map((r) => {
    if (r instanceof Error) throw r;
    return r.id;
  });
}

/** Wait until every task ended (the last queued starts last: the others are then mostly done). */
async function ended(ids: string[], timeoutMs = 60_000): Promise<Task[]> {
  await svc.bc.wait(ids.at(-1)!, { timeoutMs });
  const tasks: Task[] = [];
  for (let i = 0; i < ids.length; i += 100) {
    tasks.push(...(await Promise.all(ids.slice(i, i + 100).map((id) => svc.bc.wait(id, { timeoutMs })))));
  }
  return tasks;
}

async function queue(handler = SLEEP): Promise<QueueInfo> {
  const { queues } = await admin.listQueues({});
  const found = queues.find((q) => q.handler === handler);
  expect(found, `${handler} is listed`).toBeDefined();
  return found!;
}

/** Now by Redis's clock, epoch ms: the clock of started_at. */
const redisNow = () => storeOf(svc.bc).timeMs();

/** Calls of fetch.lua for `handler` seen by MONITOR while `during` runs. */
async function fetchesDuring(handler: string, during: () => Promise<void>): Promise<number> {
  const monitor = await redis.client.monitor();
  let fetches = 0;
  const queueKey = keys.queueKey(handler);
  monitor.on("monitor", (_time: string, args: string[]) => {
    if (args[0]?.toLowerCase() === "evalsha" && args[1] === SCRIPTS.fetch.sha && args.includes(queueKey)) fetches++;
  });
  try {
    await during();
  } finally {
    monitor.disconnect();
  }
  return fetches;
}

// ---------------------------------------------------------------------------------------------

describe("three worker processes, one limit", () => {
  it("a rate of 20/s holds within 10 % over 30 s, measured from the tasks' own start times", async () => {
    const answer = await admin.setQueueLimits({ handler: SLEEP, limits: { ratePerSecond: 20 } });
    expect(answer.queue).toMatchObject({ handler: SLEEP, ratePerSecond: 20, burst: 0, maxRunning: 0, paused: false });
    const burst = 20; // burst 0: the rate's
    const ids = await enqueue(burst + 30 * 20, { ms: 0 });
    // While they run, nearly every queued task is held back by the rate.
    const during = await queue();
    expect(Number(during.held)).toBeGreaterThanOrEqual(Number(during.queued) - burst);
    expect(Number(during.held)).toBeGreaterThan(0);
    const tasks = await ended(ids, 120_000);
    expect(tasks.filter((t) => t.status !== "finished")).toEqual([]);
    // The first `burst` starts spend the full bucket at once; after them, one start per token.
    const { rate, seconds } = steadyRate(tasks, burst);
    console.log(`[figures] rate limit 20/s, 3 processes: ${rate.toFixed(2)} starts/s over ${seconds.toFixed(1)} s`);
    expect(rate).toBeGreaterThanOrEqual(18);
    expect(rate).toBeLessThanOrEqual(22);
    // Every process took part (the bucket is shared, not split).
    expect(new Set(tasks.map((t) => t.worker)).size).toBeGreaterThanOrEqual(2);
  }, 180_000);

  it("max_running 2 is never exceeded across the processes, and is reached", async () => {
    await admin.setQueueLimits({ handler: SLEEP, limits: { maxRunning: 2 } });
    const ids = await enqueue(30, { ms: 100 });
    const tasks = await ended(ids);
    expect(tasks.filter((t) => t.status !== "finished" || t.attempts !== 1)).toEqual([]);
    expect(mostAtOnce(tasks)).toBe(2);
  }, 60_000);

  it("pause: after PauseQueue answers no task starts anywhere, running ones finish, held ones stay QUEUED; resume starts them", async () => {
    const ids = await enqueue(150, { ms: 300 });
    await eventually(async () => ((await queue()).started >= 5n ? true : undefined));
    const paused = await admin.pauseQueue({ handler: SLEEP });
    const pausedAt = await redisNow();
    expect(paused.queue).toMatchObject({ handler: SLEEP, paused: true });
    // The running ones finish; then a bounded look: nothing starts.
    await eventually(async () => ((await queue()).started === 0n ? true : undefined));
    await sleep(1500);
    const tasks = await storeOf(svc.bc).getTasks(ids);
    const queued = tasks.filter((t) => t.status === "queued");
    const ran = tasks.filter((t) => t.status !== "queued");
    expect(queued.length).toBeGreaterThan(0);
    expect(ran.length).toBeGreaterThan(0);
    expect(ran.filter((t) => t.status !== "finished" || msFromIso(t.startedAt) > pausedAt)).toEqual([]);
    // Held, not failed: no attempt counted, no error, no start.
    expect(queued.filter((t) => t.attempts !== 0 || t.lastError !== undefined || t.startedAt !== undefined)).toEqual([]);
    const listed = await queue();
    expect(listed).toMatchObject({ paused: true, queued: BigInt(queued.length), held: BigInt(queued.length) });
    const metrics = await (await fetch(`${svc.baseUrl}/metrics`)).text();
    expect(metrics).toContain(`baichuan_queue_paused{handler="${SLEEP}"} 1`);
    expect(metrics).toContain(`baichuan_queue_held{handler="${SLEEP}"} ${queued.length}`);

    const beforeResume = await redisNow();
    const resumed = await admin.resumeQueue({ handler: SLEEP });
    expect(resumed.queue!.paused).toBe(false);
    const all = await ended(ids);
    expect(all.filter((t) => t.status !== "finished" || t.attempts !== 1)).toEqual([]);
    const afterResume = all.filter((t) => queued.some((q) => q.id === t.id)).map((t) => msFromIso(t.startedAt));
    expect(afterResume.every((at) => at >= beforeResume)).toBe(true);
    // Woken at once by the resume (`go`), not by the slow safety timer (5 s).
    expect(Math.min(...afterResume) - beforeResume).toBeLessThan(4000);
  }, 90_000);

  it("limits changed at run time are obeyed by the running processes, tightened and loosened", async () => {
    await admin.setQueueLimits({ handler: SLEEP, limits: { maxRunning: 1 } });
    expect(mostAtOnce(await ended(await enqueue(6, { ms: 150 })))).toBe(1);
    await admin.setQueueLimits({ handler: SLEEP, limits: { maxRunning: 3 } });
    const most = mostAtOnce(await ended(await enqueue(12, { ms: 300 })));
    expect(most).toBeGreaterThanOrEqual(2);
    expect(most).toBeLessThanOrEqual(3);
  }, 60_000);

  it("a task held back stays QUEUED and nobody polls: a running limit waits for a wake-up, a rate for its token", async () => {
    await admin.setQueueLimits({ handler: SLEEP, limits: { maxRunning: 1 } });
    const [long] = await enqueue(1, { ms: 4000 });
    await eventually(async () => ((await svc.bc.getTask(long!)).status === "started" ? true : undefined));
    const held = await enqueue(10, { ms: 0 });
    // 3 s of a binding running limit: each process looks again only on its 5 s safety timer.
    const underRunning = await fetchesDuring(SLEEP, () => sleep(3000));
    expect(underRunning).toBeLessThanOrEqual(9);
    expect(await queue()).toMatchObject({ queued: 10n, held: 10n, started: 1n, maxRunning: 1 });
    const tasks = await storeOf(svc.bc).getTasks(held);
    expect(tasks.filter((t) => t.status !== "queued" || t.attempts !== 0)).toEqual([]);
    // One start every 5 s: the change wakes every process once, then each waits for the token.
    await admin.setQueueLimits({ handler: SLEEP, limits: { ratePerSecond: 0.2, burst: 1 } });
    const underRate = await fetchesDuring(SLEEP, () => sleep(3000));
    expect(underRate).toBeLessThanOrEqual(9);
    console.log(`[figures] fetches in 3 s with 3 processes held: ${underRunning} (running limit), ${underRate} (rate 0.2/s)`);
    expect((await svc.bc.wait(long!, { timeoutMs: 30_000 })).status).toBe("finished");
  }, 60_000);
});

describe("limits set at run time and in code", () => {
  it("bad SetQueueLimits input is INVALID_ARGUMENT and changes nothing; a token must cover the handler", async () => {
    await admin.setQueueLimits({ handler: SLEEP, limits: { ratePerSecond: 5, maxRunning: 4 } });
    await admin.pauseQueue({ handler: SLEEP });
    const before = await redis.client.hgetall(keys.limitsKey(SLEEP));
    expect(before).toEqual({ rate: "5", burst: "0", max_running: "4", max_running_per_key: "0", paused: "1" });
    const bad: Array<[string, Parameters<typeof admin.setQueueLimits>[0]]> = [
      ["no handler", { limits: { ratePerSecond: 1 } }],
      ["a malformed handler", { handler: "no-slash", limits: { ratePerSecond: 1 } }],
      ["a NaN rate", { handler: SLEEP, limits: { ratePerSecond: Number.NaN } }],
      ["an infinite rate", { handler: SLEEP, limits: { ratePerSecond: Number.POSITIVE_INFINITY } }],
      ["a negative rate", { handler: SLEEP, limits: { ratePerSecond: -1 } }],
      ["a rate over 1e6", { handler: SLEEP, limits: { ratePerSecond: 1_000_001 } }],
      ["a burst over 1e6", { handler: SLEEP, limits: { ratePerSecond: 1, burst: 1_000_001 } }],
      ["max_running over 1e6", { handler: SLEEP, limits: { maxRunning: 1_000_001 } }],
      ["max_running_per_key over 1e6", { handler: SLEEP, limits: { maxRunningPerKey: 1_000_001 } }],
    ];
    for (const [what, request] of bad) {
      expect(await codeOf(admin.setQueueLimits(request)), what).toBe(Code.InvalidArgument);
    }
    // Connect JSON with a misspelt or unknown field is refused, not read as "no limits".
    for (const body of [`{"handler":"${SLEEP}","limits":{"max_runing":4}}`, `{"handler":"${SLEEP}","limitz":{}}`]) {
      const res = await fetch(`${svc.baseUrl}/baichuan.v1.AdminService/SetQueueLimits`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(((await res.json()) as { code: string }).code, body).toBe("invalid_argument");
    }
    expect(await codeOf(admin.pauseQueue({ handler: "/x" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(admin.resumeQueue({ handler: "" }))).toBe(Code.InvalidArgument);
    // A token that does not cover the handler may not change it.
    const withToken =
      (token: string): Interceptor =>
      (next) =>
      (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      };
    const viaTokens = (token?: string) =>
      createClient(
        AdminService,
        createConnectTransport({ baseUrl: authed.baseUrl, httpVersion: "1.1", interceptors: token ? [withToken(token)] : [] }),
      );
    expect(await codeOf(viaTokens(NARROW).resumeQueue({ handler: SLEEP }))).toBe(Code.PermissionDenied);
    expect(await codeOf(viaTokens(NARROW).setQueueLimits({ handler: SLEEP, limits: NONE }))).toBe(Code.PermissionDenied);
    expect(await codeOf(viaTokens().pauseQueue({ handler: SLEEP }))).toBe(Code.Unauthenticated);
    expect(await redis.client.hgetall(keys.limitsKey(SLEEP))).toEqual(before);
    const ok = await viaTokens(ROOT).setQueueLimits({ handler: SLEEP, limits: { ratePerSecond: 0.5 } });
    expect(ok.queue).toMatchObject({ ratePerSecond: 0.5, maxRunning: 0, paused: true });
    expect(await redis.client.hget(keys.limitsKey(SLEEP), "rate")).toBe("0.5");
  });

  it("a new process obeys the limits Redis holds; a handler module's limits are written only where Redis holds none", async () => {
    // Before the process starts: an operator's explicit "no limit" on PACED, a pause on WORK.
    await admin.setQueueLimits({ handler: PACED, limits: NONE });
    await admin.pauseQueue({ handler: WORK });
    const ids = await enqueue(3, { ms: 200 }, WORK);
    const p = startProcess({
      BAICHUAN_REDIS_URL: redis.url,
      BAICHUAN_API: "0",
      BAICHUAN_HANDLERS_DIR: "test/fixtures/flow-handlers",
      BAICHUAN_CONCURRENCY: "10",
    });
    try {
      await p.waitFor(/"worker started"/);
      // The module's limits: WORK's written (Redis had none), PACED's not (the operator's zeros win).
      expect(await queue(WORK)).toMatchObject({ maxRunning: 1, paused: true, queued: 3n, held: 3n });
      expect(await queue(PACED)).toMatchObject({ ratePerSecond: 0, maxRunning: 0 });
      expect(await redis.client.hgetall(keys.limitsKey(PACED))).toMatchObject({ rate: "0", max_running: "0" });
      // The only process with WORK starts none of its tasks while it is paused (a bounded look).
      await sleep(1000);
      expect((await storeOf(svc.bc).getTasks(ids)).map((t) => t.status)).toEqual(["queued", "queued", "queued"]);
      await admin.resumeQueue({ handler: WORK });
      const tasks = await ended(ids);
      expect(tasks.map((t) => t.status)).toEqual(["finished", "finished", "finished"]);
      expect(mostAtOnce(tasks)).toBe(1); // the module's max_running
    } finally {
      p.kill("SIGTERM");
      await p.exited;
    }
  }, 90_000);
});

describe("the other entry points", () => {
  const call = (name: string, body: unknown) => postJson(svc.baseUrl, `/canghai/${name}`, body);

  it("legacy URLs: set_queue_limits, pause_queue, resume_queue answer the queue; list_queues shows limits, paused, held", async () => {
    await enqueue(2, { ms: 0 }, "/legacy_flow/none"); // no process has it: it stays queued
    const limited = await call("set_queue_limits", { queue: SLEEP, rate_per_second: 2.5, burst: 5, max_running: 3 });
    expect(limited.json).toMatchObject({
      stat: "OK",
      data: { queue: SLEEP, rate_per_second: 2.5, burst: 5, max_running: 3, max_running_per_key: 0, paused: false },
    });
    const paused = await call("pause_queue", { queue: "/legacy_flow/none" });
    expect(paused.json).toMatchObject({ stat: "OK", data: { queue: "/legacy_flow/none", paused: true, queued: 2, held: 2 } });
    // GET with query parameters (strings), as the original's other admin URLs.
    const viaGet = await getJson(svc.baseUrl, `/canghai/set_queue_limits?queue=${SLEEP}&max_running=7`);
    expect(viaGet.json).toMatchObject({ stat: "OK", data: { rate_per_second: 0, max_running: 7 } });
    const listed = (await call("list_queues", {})).json;
    expect(listed.stat).toBe("OK");
    expect(listed.data.find((q: { queue: string }) => q.queue === "/legacy_flow/none")).toMatchObject({
      paused: true,
      held: 2,
      rate_per_second: 0,
      burst: 0,
      max_running: 0,
      max_running_per_key: 0,
    });
    const before = await redis.client.hgetall(keys.limitsKey(SLEEP));
    for (const body of [
      { queue: SLEEP, rate_per_second: -1 },
      { queue: SLEEP, max_running: "lots" },
      { queue: SLEEP, burst: 1.5 },
      { rate_per_second: 1 },
      { queue: SLEEP, max_runing: 4 }, // misspelt: refused, not read as "no limits"
    ]) {
      expect((await call("set_queue_limits", body)).json.stat, JSON.stringify(body)).toBe("ERR_BAD_PARAMS");
    }
    expect((await call("pause_queue", { queue: "bad" })).json.stat).toBe("ERR_BAD_PARAMS");
    expect(await redis.client.hgetall(keys.limitsKey(SLEEP))).toEqual(before);
    expect((await call("resume_queue", { queue: "/legacy_flow/none" })).json).toMatchObject({
      stat: "OK",
      data: { paused: false, held: 0 },
    });
    await admin.emptyQueue({ handler: "/legacy_flow/none", status: TaskStatus.QUEUED });
  });

  it("the command line: queue pause, resume, limits (given ones change, the others stay), ls shows them", async () => {
    const H = "/cli_flow/h";
    const cli = async (args: string[]) => {
      let stdout = "";
      let stderr = "";
      const env = { BAICHUAN_URL: svc.baseUrl };
      const code = await main(args, { stdout: { write: (s) => (stdout += s) }, stderr: { write: (s) => (stderr += s) }, env });
      return { code, stdout, stderr };
    };
    // The real process, as a user runs it.
    const binary = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(
        "node",
        ["--import", "tsx", "src/cli/bin.ts", "queue", "pause", H],
        { env: { ...process.env, BAICHUAN_URL: svc.baseUrl }, timeout: 60_000 },
        (err, stdout) => resolve({ code: err ? Number(err.code ?? -1) : 0, stdout }),
      ),
    );
    expect(binary).toEqual({ code: 0, stdout: `${H}  paused: 0 queued (0 held), 0 running\n` });
    expect(await redis.client.hget(keys.limitsKey(H), "paused")).toBe("1");

    const limits = await cli(["queue", "limits", H, "--rate", "0.5", "--max-running", "2"]);
    expect(limits).toMatchObject({ code: 0, stderr: "" });
    expect(limits.stdout).toBe(`${H}  paused, 0.5/s, 2 running: 0 queued (0 held), 0 running\n`);
    // Only --burst given: the rate and max_running stay.
    expect((await cli(["queue", "limits", H, "--burst", "4"])).stdout).toBe(
      `${H}  paused, 0.5/s burst 4, 2 running: 0 queued (0 held), 0 running\n`,
    );
    const shown = await cli(["queue", "limits", H, "--json"]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ handler: H, ratePerSecond: 0.5, burst: 4, maxRunning: 2, paused: true });
    const ls = await cli(["ls"]);
    const line = ls.stdout.split("\n").find((l) => l.startsWith(`${H} `))!;
    expect(
      line
        .trim()
        .split(/\s{2,}/)
        .slice(-2),
    ).toEqual(["paused, 0.5/s burst 4, 2 running", "0"]);
    expect((await cli(["queue", "resume", H])).stdout).toBe(`${H}  0.5/s burst 4, 2 running: 0 queued (0 held), 0 running\n`);
    expect((await cli(["queue", "limits", H, "--rate", "0", "--burst", "0", "--max-running", "0"])).stdout).toBe(
      `${H}  no limits: 0 queued (0 held), 0 running\n`,
    );

    // Mistakes: usage errors (exit 2) change nothing; a refused name is exit 4.
    const before = await redis.client.hgetall(keys.limitsKey(H));
    for (const args of [
      ["queue", "frob", H],
      ["queue", "pause", H, "--rate", "3"],
      ["queue", "limits", H, "--rate", "-1"],
      ["queue", "limits", H, "--max-running", "1.5"],
      ["queue", "limits", H, "--burst", "2000000"],
      ["queue", "pause"],
    ]) {
      const run = await cli(args);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stderr).toMatch(/^baichuan: queue: .+\(see baichuan queue --help\)\n$/);
    }
    expect((await cli(["queue", "pause", "no-slash"])).code).toBe(4);
    expect(await redis.client.hgetall(keys.limitsKey(H))).toEqual(before);
    const help = await cli(["queue", "--help"]);
    for (const option of ["--rate N", "--burst N", "--max-running N", "--max-running-per-key N"]) {
      expect(help.stdout).toContain(option);
    }
  }, 90_000);
});

describe("a Redis restart", () => {
  it("keeps the limits and the pause (AOF): the worker obeys them after Redis comes back", async () => {
    const aof = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
    const H = "/aof_flow/ok";
    const own = await startService({ redis: aof, demo: false, handlers: { [H]: () => ({ ok: true }) } });
    const ownAdmin = createClient(AdminService, createConnectTransport({ baseUrl: own.baseUrl, httpVersion: "1.1" }));
    try {
      await ownAdmin.setQueueLimits({ handler: H, limits: { ratePerSecond: 3, burst: 2, maxRunning: 5, maxRunningPerKey: 1 } });
      await ownAdmin.pauseQueue({ handler: H });
      const before = await aof.client.hgetall(keys.limitsKey(H));
      await aof.stop(true); // SIGKILL
      await aof.restart();
      expect(await eventually(() => aof.client.hgetall(keys.limitsKey(H)).catch(() => undefined))).toEqual(before);
      const { id } = await eventually(() => own.bc.enqueue(H, {}).catch(() => undefined));
      await sleep(1000); // a bounded look: the worker, reconnected, starts nothing while paused
      expect((await own.bc.getTask(id)).status).toBe("queued");
      expect((await ownAdmin.listQueues({})).queues.find((q) => q.handler === H)).toMatchObject({
        ratePerSecond: 3,
        burst: 2,
        maxRunning: 5,
        maxRunningPerKey: 1,
        paused: true,
        held: 1n,
      });
      await ownAdmin.resumeQueue({ handler: H });
      expect((await own.bc.wait(id, { timeoutMs: 30_000 })).status).toBe("finished");
    } finally {
      await own.close();
      await aof.destroy();
    }
  }, 90_000);
});
