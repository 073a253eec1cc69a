/**
 * `npm run bench`: BaiChuan and BullMQ in the same run, against one redis-server this script
 * starts, with the same payloads; prints one table of medians and ratios.
 *
 *   npm run bench                 full run (3 repeats per scenario)
 *   npm run bench -- --short      small counts, one repeat (CI: proves the benchmark still works)
 *   npm run bench -- --only 1,4   some scenarios
 *
 * Scenario 12 runs the built service (dist/, as `npm start` does); the benchmark builds it first
 * (`npm run build`) when dist/ is missing or older than a source file. Each scenario's single runs
 * are printed on stderr ("runs: ...") beside the table's medians.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { connect as connectHttp2 } from "node:http2";
import { createServer as createNetServer, Socket } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Queue, QueueEvents } from "bullmq";
import { CreateTaskRequestSchema, TaskService, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { microsFromIso, type QueueLimits } from "../src/core/domain.js";
import type { EnqueueItem } from "../src/engine/baichuan.js";
import { taskKey } from "../src/store/keys.js";
import { startCluster } from "../test/support/cluster.js";
import { startRedis, type TestRedis } from "../test/support/redis.js";
import {
  child,
  command,
  commandCount,
  library,
  median,
  NOOP,
  oneAtATime,
  percentile,
  rawWatch,
  rssBytes,
  sleep,
  usedMemory,
} from "./lib.js";

const exec = promisify(execFile);
const args = process.argv.slice(2);
const SHORT = args.includes("--short");
const REPEAT = SHORT ? 1 : 3;
const only = args.includes("--only") ? new Set(args[args.indexOf("--only") + 1]!.split(",").map(Number)) : undefined;
const N = SHORT ? 2000 : 20_000;
const LATENCY_N = SHORT ? 200 : 2000;

interface Row {
  scenario: string;
  metric: string;
  baichuan: number;
  bullmq?: number;
  /** Ratio BaiChuan / BullMQ is "better" when higher (throughput) or lower (latency, cost). */
  better: "higher" | "lower";
  /** Shown after the BaiChuan figure. */
  note?: string;
}
const rows: Row[] = [];

let redis: TestRedis;
const connection = () => ({ host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null });

async function fresh(): Promise<void> {
  await redis.client.flushall();
  await redis.client.config("RESETSTAT");
}

/**
 * Run `fn` REPEAT times on a fresh Redis and return the median of each named figure; with a
 * `label`, each run's figures are printed on stderr too (for ranges).
 */
async function repeat(fn: () => Promise<Record<string, number>>, label?: string): Promise<Record<string, number>> {
  const runs: Array<Record<string, number>> = [];
  for (let i = 0; i < REPEAT; i++) {
    await fresh();
    runs.push(await fn());
  }
  if (label) {
    const each = Object.keys(runs[0]!).map((k) => `${k} ${runs.map((r) => round(r[k]!)).join(", ")}`);
    console.error(`runs: ${label}: ${each.join("; ")}`);
  }
  return Object.fromEntries(Object.keys(runs[0]!).map((k) => [k, median(runs.map((r) => r[k]!))]));
}

async function inFlight(total: number, width: number, op: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < total) await op(next++);
    }),
  );
}

/** A grant that covers every handler (the benchmark runs without tokens). */
const ALL = { allows: () => true };

const rate = (count: number, ms: number) => Math.round((count / ms) * 1000);

// 1. Library enqueue, 64 in flight. Both systems warm up first (3 x N untimed enqueues each): this
// is the first scenario of a run, and a cold process measured its compiler, not its enqueue
// (BaiChuan's rate still rose over its first 40,000 or more; docs/performance.md has the figures).
async function enqueue(): Promise<void> {
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  await inFlight(3 * N, 64, () => bc.enqueue(NOOP, {}));
  const ours = await repeat(async () => {
    const t0 = performance.now();
    await inFlight(N, 64, () => bc.enqueue(NOOP, {}));
    return { rate: rate(N, performance.now() - t0) };
  });
  await bc.close();
  const queue = new Queue("bench", { connection: connection() });
  await inFlight(3 * N, 64, () => queue.add("noop", {}));
  const theirs = await repeat(async () => {
    await queue.add("noop", {});
    const t0 = performance.now();
    await inFlight(N, 64, () => queue.add("noop", {}));
    return { rate: rate(N, performance.now() - t0) };
  });
  await queue.close();
  rows.push({
    scenario: "1. library enqueue, 64 in flight",
    metric: "tasks/s",
    baichuan: ours.rate!,
    bullmq: theirs.rate!,
    better: "higher",
  });
}

// 2. Bulk enqueue, batches of 1,000.
async function bulk(): Promise<void> {
  const batch = 1000;
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  const ours = await repeat(async () => {
    const items = Array.from({ length: batch }, () => ({ handler: NOOP, params: {} }));
    const t0 = performance.now();
    for (let done = 0; done < N; done += batch) await bc.enqueueMany(items);
    return { rate: rate(N, performance.now() - t0) };
  });
  await bc.close();
  const queue = new Queue("bench", { connection: connection() });
  const theirs = await repeat(async () => {
    const jobs = Array.from({ length: batch }, () => ({ name: "noop", data: {} }));
    const t0 = performance.now();
    for (let done = 0; done < N; done += batch) await queue.addBulk(jobs);
    return { rate: rate(N, performance.now() - t0) };
  });
  await queue.close();
  rows.push({
    scenario: "2. bulk enqueue, batches of 1,000",
    metric: "tasks/s",
    baichuan: ours.rate!,
    bullmq: theirs.rate!,
    better: "higher",
  });
}

/** Time one worker process (concurrency 50) takes to run `count` queued tasks. */
async function drainWith(system: "baichuan" | "bullmq", count: number, env: Record<string, string> = {}): Promise<number> {
  const worker = child("bench/worker-process.ts", [system, redis.url, "50", String(count)], env);
  try {
    await worker.line(/^ready/);
    worker.send("go");
    const [, ms] = await worker.line(/^done ([\d.]+)/, 300_000);
    return rate(count, Number(ms));
  } finally {
    await worker.stop();
  }
}

// 3. Drain: N queued no-op tasks, one worker process, concurrency 50.
async function drain(): Promise<void> {
  const ours = await repeat(async () => {
    const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
    for (let i = 0; i < N; i += 1000) await bc.enqueueMany(Array.from({ length: 1000 }, () => ({ handler: NOOP })));
    await bc.close();
    return { rate: await drainWith("baichuan", N) };
  });
  const theirs = await repeat(async () => {
    const queue = new Queue("bench", { connection: connection() });
    for (let i = 0; i < N; i += 1000) await queue.addBulk(Array.from({ length: 1000 }, () => ({ name: "noop", data: {} })));
    await queue.close();
    return { rate: await drainWith("bullmq", N) };
  });
  rows.push({
    scenario: "3. drain, 1 worker process, concurrency 50",
    metric: "tasks/s",
    baichuan: ours.rate!,
    bullmq: theirs.rate!,
    better: "higher",
  });
}

// 4. End-to-end latency, one at a time: enqueue -> completion seen by a waiting caller.
async function latency(): Promise<void> {
  const measure = async (system: "baichuan" | "bullmq", once: () => Promise<void>) => {
    const worker = child("bench/worker-process.ts", [system, redis.url, "50", "0"]);
    try {
      await worker.line(/^ready/);
      worker.send("go");
      await sleep(300);
      return await oneAtATime(once, LATENCY_N);
    } finally {
      await worker.stop();
    }
  };
  const bc = await BaiChuan.connect({ redis: redis.url });
  const ours = await repeat(() =>
    measure("baichuan", async () => {
      await bc.wait((await bc.enqueue(NOOP, {})).id);
    }),
  );
  await bc.close();
  const queue = new Queue("bench", { connection: connection() });
  const events = new QueueEvents("bench", { connection: connection() });
  await events.waitUntilReady();
  const theirs = await repeat(() =>
    measure("bullmq", async () => {
      await (await queue.add("noop", {})).waitUntilFinished(events);
    }),
  );
  await events.close();
  await queue.close();
  const s = "4. end to end, one at a time, caller in another process";
  rows.push({ scenario: s, metric: "p50 ms", baichuan: ours.p50!, bullmq: theirs.p50!, better: "lower" });
  rows.push({ scenario: s, metric: "p99 ms", baichuan: ours.p99!, bullmq: theirs.p99!, better: "lower" });
  // The caller in the worker's process (a service that queues work for its own workers; the server
  // behind CreateTask + WatchTask): BaiChuan's create claims the task for the idle worker, and the
  // wait hears of its end from the worker (docs/architecture.md, "Claims").
  const here = async (system: "baichuan" | "bullmq") => {
    const worker = child("bench/worker-process.ts", [system, redis.url, "50", "0"], { BENCH_LATENCY: String(LATENCY_N) });
    try {
      await worker.line(/^ready/);
      worker.send("go");
      const [, p50, p99] = await worker.line(/^latency ([\d.]+) ([\d.]+)/);
      return { p50: Number(p50), p99: Number(p99) };
    } finally {
      await worker.stop();
    }
  };
  const oursHere = await repeat(() => here("baichuan"));
  const theirsHere = await repeat(() => here("bullmq"));
  const h = "4. end to end, one at a time, caller in the worker's process";
  rows.push({ scenario: h, metric: "p50 ms", baichuan: oursHere.p50!, bullmq: theirsHere.p50!, better: "lower" });
  rows.push({ scenario: h, metric: "p99 ms", baichuan: oursHere.p99!, bullmq: theirsHere.p99!, better: "lower" });
  // The unit both paths are made of: one Redis round trip from Node (PING, one at a time).
  const rtt: number[] = [];
  for (let i = 0; i < LATENCY_N; i++) {
    const t0 = performance.now();
    await redis.client.ping();
    rtt.push(performance.now() - t0);
  }
  rows.push({
    scenario: "4. for scale: one Redis round trip from Node (PING)",
    metric: "p50 ms",
    baichuan: percentile(rtt, 50),
    better: "lower",
  });
}

/** The protocols scenario 5 drives with h2load: request headers and body of one CreateTask call. */
interface WireProtocol {
  name: string;
  headers: string[];
  body: Buffer;
}

function wireProtocols(): WireProtocol[] {
  const message = toBinary(CreateTaskRequestSchema, create(CreateTaskRequestSchema, { handler: NOOP, params: {} }));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return [
    { name: "gRPC", headers: ["content-type: application/grpc", "te: trailers"], body: frame },
    {
      name: "Connect JSON",
      headers: ["content-type: application/json"],
      body: Buffer.from(JSON.stringify({ handler: NOOP, params: {} })),
    },
  ];
}

/** h2load (h2c) against the CreateTask endpoint; returns requests/s. */
async function h2load(port: number, protocol: WireProtocol, count: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "bench-"));
  const file = join(dir, "body");
  writeFileSync(file, protocol.body);
  const { stdout } = await exec("h2load", [
    ...["-n", String(count), "-c", "4", "-m", "32", "-t", "1", "-d", file],
    ...protocol.headers.flatMap((h) => ["-H", h]),
    `http://127.0.0.1:${port}/baichuan.v1.TaskService/CreateTask`,
  ]);
  const m = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(stdout);
  const ok = /(\d+) succeeded/.exec(stdout);
  const status2xx = /status codes: (\d+) 2xx/.exec(stdout);
  if (!m || Number(ok?.[1]) !== count || Number(status2xx?.[1]) !== count) throw new Error(`h2load: ${stdout}`);
  return Math.round(Number(m[1]));
}

// 5. Over the wire: CreateTask driven by h2load, next to a bare no-op RPC on the same stack, in
//    gRPC and in Connect JSON (unary POST); then CreateTask + WatchTask-to-finished latency from a
//    generated client.
async function wire(): Promise<void> {
  const noop = child("bench/server-process.ts", ["noop"]);
  const real = child("bench/server-process.ts", ["real", redis.url]);
  // The same with the access log on, as `npm start` logs (level info).
  const logged = child("bench/server-process.ts", ["real", redis.url, "--access-log"]);
  try {
    const noopPort = Number((await noop.line(/^port (\d+)/))[1]);
    const realPort = Number((await real.line(/^port (\d+)/))[1]);
    const loggedPort = Number((await logged.line(/^port (\d+)/))[1]);
    const queue = `mq:queue:{${(await import("../src/store/keys.js")).handlerTag(NOOP)}}${NOOP}`;
    for (const protocol of wireProtocols()) {
      const ceiling = await repeat(async () => ({ rate: await h2load(noopPort, protocol, N) }));
      for (const [port, log] of [
        [realPort, "log level error"],
        [loggedPort, "access log on"],
      ] as const) {
        const ours = await repeat(async () => ({ rate: await h2load(port, protocol, N) }));
        if ((await redis.client.llen(queue)) !== N) {
          throw new Error(`CreateTask over h2load (${protocol.name}) did not create every task`);
        }
        rows.push({
          scenario: `5. CreateTask over the wire (h2load, ${protocol.name}, 4 connections x 32 streams, ${log})`,
          metric: "calls/s (vs bare no-op RPC)",
          baichuan: ours.rate!,
          bullmq: ceiling.rate!,
          better: "higher",
        });
      }
    }
  } finally {
    await noop.stop();
    await real.stop();
    await logged.stop();
  }
  const server = child("bench/server-process.ts", ["real", redis.url, "--worker"]);
  try {
    const port = Number((await server.line(/^port (\d+)/))[1]);
    const client = createClient(TaskService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    const once = async () => {
      const { taskId } = await client.createTask({ handler: NOOP });
      for await (const { task } of client.watchTask({ taskId })) if (task?.status === TaskStatus.FINISHED) return;
    };
    const ours = await repeat(() => oneAtATime(once, LATENCY_N));
    const s = "5. CreateTask + WatchTask to FINISHED, generated gRPC client";
    rows.push({ scenario: s, metric: "p50 ms", baichuan: ours.p50!, better: "lower" });
    rows.push({ scenario: s, metric: "p99 ms", baichuan: ours.p99!, better: "lower" });
  } finally {
    await server.stop();
  }
}

// 6. Bulk over the wire: CreateTasks with batches of 100 and 1,000.
async function wireBulk(): Promise<void> {
  const server = child("bench/server-process.ts", ["real", redis.url]);
  try {
    const port = Number((await server.line(/^port (\d+)/))[1]);
    const client = createClient(TaskService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    for (const batch of [100, 1000]) {
      const tasks = Array.from({ length: batch }, () => ({ handler: NOOP, params: {} }));
      const ours = await repeat(async () => {
        await client.createTasks({ tasks });
        const t0 = performance.now();
        await inFlight(N / batch, 4, async () => {
          const { results } = await client.createTasks({ tasks });
          if (results.some((r) => r.error)) throw new Error(results.find((r) => r.error)!.error!.message);
        });
        return { rate: rate(N, performance.now() - t0) };
      });
      rows.push({
        scenario: `6. CreateTasks over the wire, batches of ${batch} (4 in flight)`,
        metric: "tasks/s",
        baichuan: ours.rate!,
        better: "higher",
      });
    }
  } finally {
    await server.stop();
  }
}

// 7. Watch fan-out: W concurrent WatchTask streams on one server process. The watched tasks end
// all at once (a burst), or at `pace` tasks/s (then only the notification latency is reported).
async function fanOut(watchers: number, pace = 0): Promise<void> {
  await fresh();
  const server = child("bench/server-process.ts", ["real", redis.url]);
  const worker = child("bench/worker-process.ts", ["baichuan", redis.url, "50", String(watchers)], {
    BENCH_HOLD: "1",
    BENCH_PACE: String(pace),
  });
  try {
    const port = Number((await server.line(/^port (\d+)/))[1]);
    const pid = server.proc.pid!;
    const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
    const ids: string[] = [];
    for (let i = 0; i < watchers; i += 1000) {
      const batch = await bc.enqueueMany(
        Array.from({ length: Math.min(1000, watchers - i) }, () => ({ handler: "/bench/hold" })),
      );
      for (const r of batch) if (!(r instanceof Error)) ids.push(r.id);
    }
    await bc.close();
    await sleep(500);
    const clientsBefore = String(await redis.client.client("LIST"))
      .trim()
      .split("\n").length;
    const rssBefore = await rssBytes(pid);
    const perConnection = 500;
    const sessions = Array.from({ length: Math.ceil(watchers / perConnection) }, () => connectHttp2(`http://127.0.0.1:${port}`));
    const latencies: number[] = [];
    let open = 0;
    const streams = ids.map((taskId, i) => {
      let first = true;
      return rawWatch(sessions[Math.floor(i / perConnection)]!, taskId, ({ task }) => {
        if (first) {
          first = false;
          open++;
        }
        if (task?.status === TaskStatus.FINISHED && task.endedAt) {
          latencies.push(Date.now() - (Number(task.endedAt.seconds) * 1000 + task.endedAt.nanos / 1e6));
        }
      });
    });
    while (open < watchers) await sleep(50);
    await sleep(500);
    const rssAfter = await rssBytes(pid);
    const clientsDuring = String(await redis.client.client("LIST"))
      .trim()
      .split("\n").length;
    await worker.line(/^ready/);
    worker.send("go");
    await Promise.all(streams);
    for (const session of sessions) session.close();
    const s = `7. watch fan-out, ${watchers.toLocaleString("en")} streams on one server`;
    if (pace > 0) {
      rows.push({
        scenario: `${s}, tasks ending at ${pace.toLocaleString("en")}/s`,
        metric: "notification p99 ms (ended_at -> client)",
        baichuan: percentile(latencies, 99),
        better: "lower",
      });
      return;
    }
    rows.push({
      scenario: s,
      metric: "server memory per stream, bytes",
      baichuan: Math.round((rssAfter - rssBefore) / watchers),
      better: "lower",
    });
    rows.push({
      scenario: s,
      metric: "server memory for all streams, MB",
      baichuan: Math.round((rssAfter - rssBefore) / 1e6),
      better: "lower",
    });
    rows.push({
      scenario: s,
      metric: "Redis connections added by the watchers",
      baichuan: clientsDuring - clientsBefore,
      better: "lower",
    });
    rows.push({
      scenario: s,
      metric: "notification p99 ms (ended_at -> client), all ending in one burst",
      baichuan: percentile(latencies, 99),
      better: "lower",
    });
  } finally {
    await server.stop();
    await worker.stop();
  }
}

// Scaling with the number of handlers: the same drain, tasks spread evenly over 1, 10, 100 handlers.
async function handlerScaling(): Promise<void> {
  for (const handlers of SHORT ? [1, 10] : [1, 10, 100]) {
    const names = [NOOP, ...Array.from({ length: handlers - 1 }, (_, i) => `/bench/h${i + 1}`)];
    const ours = await repeat(async () => {
      const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
      for (let i = 0; i < N; i += 1000) {
        await bc.enqueueMany(Array.from({ length: 1000 }, (_, k) => ({ handler: names[(i + k) % handlers]! })));
      }
      await bc.close();
      return { rate: await drainWith("baichuan", N, { BENCH_HANDLERS: String(handlers) }) };
    });
    rows.push({
      scenario: `9. drain over ${handlers} handler${handlers > 1 ? "s" : ""}, 1 worker process`,
      metric: "tasks/s",
      baichuan: ours.rate!,
      better: "higher",
    });
  }
}

// 10. Scale-out: one Redis against a 3-master Redis Cluster (no replicas), same machine: enqueue
// from this process, and drain by 1 and 2 worker processes, tasks spread over 50 handlers (and so
// over the cluster's shards). Completion is read from the handlers' counters in Redis.
async function scaleOut(): Promise<void> {
  const names = [NOOP, ...Array.from({ length: 49 }, (_, i) => `/bench/h${i + 1}`)];
  const targets: Array<[string, () => Promise<{ url: string; stop: () => Promise<void> }>]> = [
    [
      "1 Redis",
      async () => {
        const r = await startRedis();
        return { url: r.url, stop: () => r.destroy() };
      },
    ],
    [
      "3-master Redis Cluster",
      async () => {
        const c = await startCluster({ masters: 3, replicasPerMaster: 0 });
        return { url: c.url, stop: () => c.destroy() };
      },
    ],
  ];
  for (const [label, start] of targets) {
    const target = await start();
    try {
      const bc = await BaiChuan.connect({ redis: target.url, limits: { maxQueued: 0 } });
      let total = 0;
      const finished = async () => (await bc.admin.queueStats(names)).reduce((n, q) => n + q.finished, 0);
      const fill = async () => {
        const t0 = performance.now();
        for (let i = 0; i < N; i += 1000) {
          await bc.enqueueMany(Array.from({ length: 1000 }, (_, k) => ({ handler: names[(i + k) % names.length]! })));
        }
        total += N;
        return rate(N, performance.now() - t0);
      };
      const drainBy = async (processes: number) => {
        const workers = Array.from({ length: processes }, () =>
          child("bench/worker-process.ts", ["baichuan", target.url, "50", "0"], { BENCH_HANDLERS: String(names.length) }),
        );
        try {
          await Promise.all(workers.map((w) => w.line(/^ready/)));
          const t0 = performance.now();
          for (const w of workers) w.send("go");
          while ((await finished()) < total) await sleep(20);
          return rate(N, performance.now() - t0);
        } finally {
          await Promise.all(workers.map((w) => w.stop()));
        }
      };
      const enqueueRate = await fill();
      const one = await drainBy(1);
      await fill();
      const two = await drainBy(2);
      await bc.close();
      const s = `10. scale-out on ${label}, 50 handlers`;
      rows.push({
        scenario: s,
        metric: "enqueue tasks/s (enqueueMany, batches of 1,000)",
        baichuan: enqueueRate,
        better: "higher",
      });
      rows.push({ scenario: s, metric: "drain tasks/s, 1 worker process", baichuan: one, better: "higher" });
      rows.push({ scenario: s, metric: "drain tasks/s, 2 worker processes", baichuan: two, better: "higher" });
    } finally {
      await target.stop();
    }
  }
}

/** Run `count` queued tasks by one worker process: the whole time and the steady rate (see worker-process.ts). */
async function drainTimed(system: "baichuan" | "bullmq", count: number, env: Record<string, string> = {}) {
  const worker = child("bench/worker-process.ts", [system, redis.url, "50", String(count)], env);
  try {
    await worker.line(/^ready/);
    worker.send("go");
    const [, ms, steady] = await worker.line(/^done ([\d.]+) ([\d.]+)/, 300_000);
    return { rate: rate(count, Number(ms)), steady: Number(steady) };
  } finally {
    await worker.stop();
  }
}

async function fill(count: number, item: (i: number) => EnqueueItem): Promise<void> {
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  for (let i = 0; i < count; i += 1000) {
    await bc.enqueueMany(Array.from({ length: Math.min(1000, count - i) }, (_, k) => item(i + k)));
  }
  await bc.close();
}

// 11. Flow control. A rate-limited handler's achieved rate (steady part, first and last 10 % of the
// runs left out), beside BullMQ's rate limiter (`limiter: {max, duration: 1000}`) at the same rate;
// and the cost of concurrency keys: the drain of scenario 3 with every task in one of 100 keys, with
// no cap and with at most 1 running per key.
async function flowControl(): Promise<void> {
  const limit = SHORT ? 100 : 200;
  const count = limit * (SHORT ? 3 : 10);
  const ours = await repeat(async () => {
    await setLimits(NOOP, { ratePerSecond: limit, burst: limit });
    await fill(count, () => ({ handler: NOOP }));
    return { steady: (await drainTimed("baichuan", count)).steady };
  });
  const theirs = await repeat(async () => {
    const queue = new Queue("bench", { connection: connection() });
    for (let i = 0; i < count; i += 1000) {
      await queue.addBulk(Array.from({ length: Math.min(1000, count - i) }, () => ({ name: "noop", data: {} })));
    }
    await queue.close();
    return { steady: (await drainTimed("bullmq", count, { BENCH_LIMIT_RATE: String(limit) })).steady };
  });
  rows.push({
    scenario: `11. rate limit of ${limit}/s, 1 worker process, concurrency 50`,
    metric: "achieved tasks/s (steady part)",
    baichuan: ours.steady!,
    bullmq: theirs.steady!,
    better: "higher",
  });
  const keys = 100;
  const drains: Array<[string, number]> = [];
  for (const [label, cap] of [
    ["no concurrency key", -1],
    [`${keys} concurrency keys, no cap`, 0],
    [`${keys} concurrency keys, 1 running per key`, 1],
  ] as const) {
    const figures = await repeat(async () => {
      if (cap > 0) await setLimits(NOOP, { maxRunningPerKey: cap });
      await fill(N, (i) => ({ handler: NOOP, options: cap < 0 ? {} : { concurrencyKey: `k${i % keys}` } }));
      return { rate: (await drainTimed("baichuan", N)).rate };
    });
    drains.push([label, figures.rate!]);
  }
  const base = drains[0]![1];
  for (const [label, tasksPerSecond] of drains) {
    rows.push({
      scenario: `11. drain with ${label}, 1 worker process`,
      metric: "tasks/s (µs per task more than without keys)",
      baichuan: tasksPerSecond,
      ...(tasksPerSecond === base ? {} : { note: `${Math.round(1e6 / tasksPerSecond - 1e6 / base)} µs` }),
      better: "higher",
    });
  }
}

/** Set a handler's limits as SetQueueLimits does (the library's admin call; the others 0). */
async function setLimits(handler: string, limits: Partial<QueueLimits>): Promise<void> {
  const bc = await BaiChuan.connect({ redis: redis.url });
  await bc.admin.setLimits(handler, { ratePerSecond: 0, burst: 0, maxRunning: 0, maxRunningPerKey: 0, ...limits }, ALL);
  await bc.close();
}

/** dist/ as `npm start` runs it; `npm run bench` does not build, so this does when dist/ is missing or stale. */
async function ensureBuilt(): Promise<void> {
  const mtime = (path: string) => {
    try {
      return statSync(path).mtimeMs;
    } catch {
      return undefined;
    }
  };
  const built = Math.min(...["dist/src/app/main.js", "dist/handlers/demo_api.js"].map((p) => mtime(p) ?? Number.NaN));
  const sources = ["src", "gen", "handlers"].flatMap((dir) =>
    readdirSync(dir, { recursive: true, encoding: "utf8" }).map((f) => join(dir, f)),
  );
  const newest = Math.max(...[...sources, "tsconfig.build.json", "scripts/build.mjs"].map((p) => mtime(p) ?? 0));
  if (!(built >= newest)) {
    console.error("dist/ is missing or older than the sources: npm run build");
    const t0 = Date.now();
    await exec("npm", ["run", "build"]);
    console.error(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Resolves when something accepts a TCP connection on 127.0.0.1:`port` (tried every 5 ms). */
async function portAnswers(port: number, deadline = Date.now() + 60_000): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => resolve(socket.destroy() !== undefined));
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing answers on port ${port}`);
    await sleep(5);
  }
}

/**
 * A drain's rate from the times Redis stored for each task: `count` / (earliest start -> latest
 * end). BaiChuan: `started_at` / `ended_at` of each `mq:msg:*` hash; BullMQ: `processedOn` /
 * `finishedOn` of each job hash. Start-up of the process that drained them is not in it.
 */
async function storedRate(system: "baichuan" | "bullmq", ids: string[]): Promise<number> {
  let first = Number.POSITIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < ids.length; i += 1000) {
    const pipeline = redis.client.pipeline();
    for (const id of ids.slice(i, i + 1000)) {
      if (system === "baichuan") pipeline.hmget(taskKey(id), "started_at", "ended_at");
      else pipeline.hmget(`bull:bench:${id}`, "processedOn", "finishedOn");
    }
    for (const [err, value] of (await pipeline.exec())!) {
      const [start, end] = value as [string | null, string | null];
      if (err || !start || !end) throw new Error(`a task has no start or end time stored (${err ?? `${start} ${end}`})`);
      const [s, e] =
        system === "baichuan" ? [microsFromIso(start) / 1000, microsFromIso(end) / 1000] : [Number(start), Number(end)];
      first = Math.min(first, s);
      last = Math.max(last, e);
    }
  }
  return rate(ids.length, last - first);
}

/** `count` queued tasks of `handler` (BaiChuan) in batches of 1,000; their ids. */
async function fillOurs(count: number, handler: string): Promise<string[]> {
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1000) {
    for (const r of await bc.enqueueMany(Array.from({ length: Math.min(1000, count - i) }, () => ({ handler })))) {
      if (r instanceof Error) throw r;
      ids.push(r.id);
    }
  }
  await bc.close();
  return ids;
}

/** `count` queued BullMQ jobs in batches of 1,000; their ids. */
async function fillTheirs(count: number): Promise<string[]> {
  const queue = new Queue("bench", { connection: connection() });
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1000) {
    const jobs = await queue.addBulk(Array.from({ length: Math.min(1000, count - i) }, () => ({ name: "noop", data: {} })));
    for (const job of jobs) ids.push(job.id!);
  }
  await queue.close();
  return ids;
}

const PING = "/demo_api/ping";

// 12. Drain by the shipped process: `npm start`'s command (node dist/src/app/main.js, the built demo
// handlers, its defaults: API, metrics, access log, lease keeper), BAICHUAN_CONCURRENCY=50, started
// once N /demo_api/ping tasks are queued. Its rate is read from the tasks' own times in Redis (so its
// start-up is left out), as are the in-code worker's (worker-process.ts, /bench/noop) and BullMQ's.
// Its start-up is its own row: spawn -> port answering, spawn -> "worker started" log line.
async function shipped(): Promise<void> {
  await ensureBuilt();
  const ours = await repeat(async () => {
    const ids = await fillOurs(N, PING);
    const bc = await BaiChuan.connect({ redis: redis.url });
    const port = await freePort();
    const t0 = performance.now();
    const proc = command(
      "node",
      ["dist/src/app/main.js"],
      {
        BAICHUAN_HANDLERS_DIR: "dist/handlers",
        BAICHUAN_REDIS_URL: redis.url,
        BAICHUAN_PORT: String(port),
        BAICHUAN_CONCURRENCY: "50",
      },
      "stderr",
    );
    try {
      const [toPort, toWorker] = await Promise.all([
        portAnswers(port).then(() => performance.now() - t0),
        proc.line(/"msg":"worker started"/, 60_000).then(() => performance.now() - t0),
      ]);
      for (;;) {
        const [stats] = await bc.admin.queueStats([PING]);
        if (stats!.finished >= N) break;
        await sleep(20);
      }
      return { rate: await storedRate("baichuan", ids), toPort, toWorker };
    } finally {
      await proc.stop();
      await bc.close();
    }
  }, "12 shipped process");
  const inCode = await repeat(async () => {
    const ids = await fillOurs(N, NOOP);
    const own = await drainWith("baichuan", N);
    return { rate: await storedRate("baichuan", ids), own };
  }, "12 in-code worker");
  const theirs = await repeat(async () => {
    const ids = await fillTheirs(N);
    const own = await drainWith("bullmq", N);
    return { rate: await storedRate("bullmq", ids), own };
  }, "12 BullMQ worker");
  const metric = "tasks/s, first start -> last end as Redis stored them";
  rows.push({
    scenario: "12. drain by the shipped process (npm start's command, /demo_api/ping, concurrency 50)",
    metric,
    baichuan: ours.rate!,
    bullmq: theirs.rate!,
    better: "higher",
  });
  rows.push({
    scenario: "12. drain by the in-code worker (worker-process.ts, /bench/noop, concurrency 50)",
    metric,
    baichuan: inCode.rate!,
    bullmq: theirs.rate!,
    better: "higher",
  });
  rows.push({
    scenario: "12. the shipped process against the in-code worker",
    metric: `${metric} (in-code worker in the second column)`,
    baichuan: ours.rate!,
    bullmq: inCode.rate!,
    better: "higher",
  });
  rows.push({
    scenario: "12. the in-code worker, as scenario 3 times it",
    metric: 'tasks/s, "go" -> last run ended, in the worker process',
    baichuan: inCode.own!,
    bullmq: theirs.own!,
    better: "higher",
  });
  const s = "12. start-up of the shipped process (N tasks queued)";
  rows.push({ scenario: s, metric: "ms, spawn -> port answering", baichuan: ours.toPort!, better: "lower" });
  rows.push({ scenario: s, metric: 'ms, spawn -> "worker started" log line', baichuan: ours.toWorker!, better: "lower" });
}

/**
 * `processes` worker processes (worker-process.ts, concurrency 50 each) run N queued tasks; done
 * when `finished()` (counters in Redis, as scenario 10 reads them) reaches N. Tasks/s from "go".
 */
async function drainByProcesses(
  system: "baichuan" | "bullmq",
  processes: number,
  finished: () => Promise<number>,
): Promise<number> {
  const workers = Array.from({ length: processes }, () => child("bench/worker-process.ts", [system, redis.url, "50", "0"]));
  try {
    await Promise.all(workers.map((w) => w.line(/^ready/)));
    const t0 = performance.now();
    for (const w of workers) w.send("go");
    while ((await finished()) < N) await sleep(20);
    return rate(N, performance.now() - t0);
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
}

// 13. Drain by 1 and 2 worker processes on the one Redis, beside BullMQ with 1 and 2 processes.
async function processScaling(): Promise<void> {
  for (const processes of [1, 2]) {
    const ours = await repeat(async () => {
      await fillOurs(N, NOOP);
      const bc = await BaiChuan.connect({ redis: redis.url });
      try {
        return {
          rate: await drainByProcesses("baichuan", processes, async () => (await bc.admin.queueStats([NOOP]))[0]!.finished),
        };
      } finally {
        await bc.close();
      }
    }, `13 BaiChuan, ${processes} processes`);
    const theirs = await repeat(async () => {
      await fillTheirs(N);
      const queue = new Queue("bench", { connection: connection() });
      try {
        return { rate: await drainByProcesses("bullmq", processes, () => queue.getCompletedCount()) };
      } finally {
        await queue.close();
      }
    }, `13 BullMQ, ${processes} processes`);
    rows.push({
      scenario: `13. drain by ${processes} worker process${processes > 1 ? "es" : ""}, concurrency 50 each, 1 Redis`,
      metric: "tasks/s",
      baichuan: ours.rate!,
      bullmq: theirs.rate!,
      better: "higher",
    });
  }
}

// 14. Library enqueue, 64 in flight (scenario 1), when 10^4, 10^5 and 10^6 tasks (--short: 10^3,
// 10^4) of the same handler / queue are already queued. Each repeat fills from empty in batches of
// 1,000 (enqueueMany / addBulk) up to each depth in turn, then enqueues N more one by one (so the
// queue holds depth to depth + N during the measure).
async function depthScaling(): Promise<void> {
  const depths = SHORT ? [1e3, 1e4] : [1e4, 1e5, 1e6];
  const levels = async (fillTo: (from: number, to: number) => Promise<void>, one: () => Promise<unknown>) => {
    const figures: Record<string, number> = {};
    let queued = 0;
    let fillMs = 0;
    for (const depth of depths) {
      const t0 = performance.now();
      await fillTo(queued, depth);
      fillMs += performance.now() - t0;
      queued = depth;
      const t1 = performance.now();
      await inFlight(N, 64, one);
      figures[`rate${depth}`] = rate(N, performance.now() - t1);
      queued += N;
    }
    figures.fillSeconds = fillMs / 1000;
    return figures;
  };
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  const ours = await repeat(
    () =>
      levels(
        async (from, to) => {
          for (let i = from; i < to; i += 1000) {
            await bc.enqueueMany(Array.from({ length: Math.min(1000, to - i) }, () => ({ handler: NOOP })));
          }
        },
        () => bc.enqueue(NOOP, {}),
      ),
    "14 BaiChuan",
  );
  const [stats] = await bc.admin.queueStats([NOOP]);
  await bc.close();
  if (stats!.queued !== depths.at(-1)! + N) throw new Error(`14: ${stats!.queued} tasks queued, not ${depths.at(-1)! + N}`);
  const queue = new Queue("bench", { connection: connection() });
  const theirs = await repeat(
    () =>
      levels(
        async (from, to) => {
          for (let i = from; i < to; i += 1000) {
            await queue.addBulk(Array.from({ length: Math.min(1000, to - i) }, () => ({ name: "noop", data: {} })));
          }
        },
        () => queue.add("noop", {}),
      ),
    "14 BullMQ",
  );
  const waiting = await queue.getWaitingCount();
  await queue.close();
  if (waiting !== depths.at(-1)! + N) throw new Error(`14: ${waiting} BullMQ jobs waiting, not ${depths.at(-1)! + N}`);
  for (const depth of depths) {
    rows.push({
      scenario: `14. library enqueue, 64 in flight, ${depth.toLocaleString("en")} tasks already queued`,
      metric: "tasks/s",
      baichuan: ours[`rate${depth}`]!,
      bullmq: theirs[`rate${depth}`]!,
      better: "higher",
    });
  }
  rows.push({
    scenario: `14. filling the queue to ${depths.at(-1)!.toLocaleString("en")} (batches of 1,000), each repeat`,
    metric: "seconds",
    baichuan: ours.fillSeconds!,
    bullmq: theirs.fillSeconds!,
    better: "lower",
  });
}

// 8. Redis cost per task over its life (params {}), and the idle cost.
async function redisCost(): Promise<void> {
  const count = SHORT ? 1000 : 10_000;
  const life = async (system: "baichuan" | "bullmq", add: () => Promise<unknown>) => {
    await fresh();
    const memory0 = await usedMemory(redis.client);
    const worker = child("bench/worker-process.ts", [system, redis.url, "50", String(count)]);
    try {
      await worker.line(/^ready/);
      const commands0 = await commandCount(redis.client);
      for (let i = 0; i < count; i++) await add();
      worker.send("go");
      await worker.line(/^done/, 300_000);
      await sleep(200);
      const commands = (await commandCount(redis.client)) - commands0;
      return { commands: commands / count, memory: ((await usedMemory(redis.client)) - memory0) / count };
    } finally {
      await worker.stop();
    }
  };
  const bc = await BaiChuan.connect({ redis: redis.url, limits: { maxQueued: 0 } });
  const ours = await life("baichuan", () => bc.enqueue(NOOP, {}));
  await bc.close();
  const queue = new Queue("bench", { connection: connection() });
  const theirs = await life("bullmq", () => queue.add("noop", {}, { removeOnComplete: false }));
  await queue.close();
  const s = "8. Redis cost per task, enqueue -> finished, kept";
  rows.push({
    scenario: s,
    metric: "Redis commands per task",
    baichuan: round(ours.commands),
    bullmq: round(theirs.commands),
    better: "lower",
  });
  rows.push({
    scenario: s,
    metric: "Redis memory per finished task, bytes",
    baichuan: Math.round(ours.memory),
    bullmq: Math.round(theirs.memory),
    better: "lower",
  });

  // Idle: a worker process with 50 handlers and the recovery sweep, doing nothing.
  await fresh();
  const idle = child("bench/worker-process.ts", ["baichuan", redis.url, "10", "0"], { BENCH_HANDLERS: "50", BENCH_SWEEP: "1" });
  try {
    await idle.line(/^ready/);
    idle.send("go");
    await sleep(2000);
    const seconds = SHORT ? 10 : 60;
    const c0 = await commandCount(redis.client);
    await sleep(seconds * 1000);
    const perSecond = ((await commandCount(redis.client)) - c0) / seconds;
    rows.push({
      scenario: "8. idle worker process with 50 handlers (+ recovery sweep)",
      metric: "Redis commands/s",
      baichuan: round(perSecond),
      better: "lower",
    });
  } finally {
    await idle.stop();
  }
}

const round = (n: number) => Math.round(n * 100) / 100;

function printTable(): void {
  const fmt = (n: number | undefined) =>
    n === undefined ? "" : n >= 100 ? Math.round(n).toLocaleString("en") : String(round(n));
  const lines = [
    "| scenario | figure | BaiChuan | BullMQ (or ceiling) | ratio |",
    "| --- | --- | ---: | ---: | ---: |",
    ...rows.map((r) => {
      const ratio = r.bullmq ? `${(r.baichuan / r.bullmq).toFixed(2)}x` : "";
      const ours = r.note ? `${fmt(r.baichuan)} (${r.note})` : fmt(r.baichuan);
      return `| ${r.scenario} | ${r.metric} | ${ours} | ${fmt(r.bullmq)} | ${ratio} |`;
    }),
  ];
  console.log(lines.join("\n"));
}

async function facts(): Promise<string> {
  const { stdout } = await exec("redis-server", ["--version"]);
  const bullmq = (await import("bullmq/package.json", { with: { type: "json" } })).default.version;
  return [
    `CPU: ${cpus()[0]?.model} x ${cpus().length}`,
    `Node ${process.version}, ${stdout.trim().split(" ").slice(0, 3).join(" ")}, BullMQ ${bullmq}`,
    `mode: ${SHORT ? "short (CI)" : "full"}, ${N} tasks per throughput run, ${LATENCY_N} latency samples, median of ${REPEAT}`,
  ].join("\n");
}

/** The built library (bench/lib.ts library()), loaded once dist/ is fresh. */
let BaiChuan: Awaited<ReturnType<typeof library>>["BaiChuan"];

async function main(): Promise<void> {
  await ensureBuilt();
  ({ BaiChuan } = await library());
  redis = await startRedis();
  try {
    console.log(await facts());
    const scenarios: Array<[number, () => Promise<void>]> = [
      [1, enqueue],
      [2, bulk],
      [3, drain],
      [4, latency],
      [5, wire],
      [6, wireBulk],
      [
        7,
        async () => {
          for (const w of SHORT ? [100] : [100, 1000, 10_000]) await fanOut(w);
          await fanOut(SHORT ? 100 : 10_000, SHORT ? 1000 : 2000);
        },
      ],
      [8, redisCost],
      [9, handlerScaling],
      [10, scaleOut],
      [11, flowControl],
      [12, shipped],
      [13, processScaling],
      [14, depthScaling],
    ];
    for (const [n, fn] of scenarios) {
      if (only && !only.has(n)) continue;
      const t0 = Date.now();
      await fn();
      console.error(`scenario ${n} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
    printTable();
  } finally {
    await redis.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
