/**
 * A worker process for the benchmark: `baichuan` or `bullmq`, a no-op handler, `concurrency`.
 * Prints "ready", starts consuming on "go" (stdin), and prints "done <ms> <steady tasks/s>" after
 * `expect` tasks ended (0: run until killed); the steady rate leaves out the first and last 10 %.
 * With BENCH_LATENCY=<n>, the process is also the caller: after "go" it creates tasks one at a
 * time, waits for each to end, and prints "latency <p50 ms> <p99 ms>" over n of them.
 *
 *   node --import tsx bench/worker-process.ts baichuan redis://127.0.0.1:6379/0 50 20000
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { createInterface } from "node:readline";
import { Worker as BullWorker, Queue, QueueEvents } from "bullmq";
import { library, NOOP, oneAtATime } from "./lib.js";

/** BENCH_PROFILE=<file>: a CPU profile of this process from "go" to "done" (the drain only). */
const profile = process.env.BENCH_PROFILE ? new Session() : undefined;
const post = (method: string, params?: object) =>
  new Promise<unknown>((resolve, reject) => profile!.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));

const [system, url, concurrencyText, expectText] = process.argv.slice(2) as [string, string, string, string];
const concurrency = Number(concurrencyText);
const expected = Number(expectText);
const handlers = Number(process.env.BENCH_HANDLERS ?? 1);
let done = 0;
let started = 0;
/** When each run ended (ms since "go"); the steady rate is read between 10 % and 90 % of them. */
const endTimes: number[] = [];
const ended = () => {
  done++;
  endTimes.push(performance.now() - started);
  if (done === expected) {
    const [t10, t90] = [endTimes[Math.floor(expected * 0.1)]!, endTimes[Math.floor(expected * 0.9)]!];
    const steady = t90 > t10 ? ((Math.floor(expected * 0.9) - Math.floor(expected * 0.1)) / (t90 - t10)) * 1000 : 0;
    console.log(`done ${(performance.now() - started).toFixed(1)} ${steady.toFixed(1)}`);
    if (profile) {
      void post("Profiler.stop").then((res) => {
        writeFileSync(process.env.BENCH_PROFILE!, JSON.stringify((res as { profile: object }).profile));
        console.log("profiled");
      });
    }
    if (process.env.BENCH_EXIT) setTimeout(() => process.exit(0), 100); // for --cpu-prof
  }
};

async function main(): Promise<void> {
  const go = new Promise<void>((resolve) => createInterface({ input: process.stdin }).once("line", () => resolve()));
  if (profile) {
    profile.connect();
    await post("Profiler.enable");
    await post("Profiler.setSamplingInterval", { interval: 200 });
    void go.then(() => post("Profiler.start"));
  }
  if (system === "baichuan") {
    const { BaiChuan } = await library();
    const bc = await BaiChuan.connect({ redis: url });
    bc.register(NOOP, () => null);
    for (let i = 1; i < handlers; i++) bc.register(`/bench/h${i}`, () => null);
    if (process.env.BENCH_HOLD) {
      // With BENCH_PACE (tasks/s), runs end at that pace instead of all at once.
      const pace = Number(process.env.BENCH_PACE ?? 0);
      let next = 0;
      bc.register("/bench/hold", async () => {
        if (pace <= 0) return null;
        next = Math.max(next, performance.now()) + 1000 / pace;
        await new Promise((r) => setTimeout(r, next - performance.now()));
        return null;
      });
    }
    if (process.env.BENCH_SWEEP) bc.startSweeper();
    console.log("ready");
    await go;
    started = performance.now();
    await bc.startWorker({ concurrency, onTaskEnd: ended });
    if (latencyRuns > 0) await latency(async () => void (await bc.wait((await bc.enqueue(NOOP, {})).id)));
  } else {
    const { hostname, port } = new URL(url);
    const connection = { host: hostname, port: Number(port), maxRetriesPerRequest: null };
    console.log("ready");
    await go;
    started = performance.now();
    // BENCH_LIMIT_RATE: BullMQ's rate limiter, that many jobs per second.
    const limit = Number(process.env.BENCH_LIMIT_RATE ?? 0);
    const worker = new BullWorker("bench", async () => null, {
      connection,
      concurrency,
      removeOnComplete: { age: 3600 },
      ...(limit > 0 ? { limiter: { max: limit, duration: 1000 } } : {}),
    });
    worker.on("completed", ended);
    if (latencyRuns > 0) {
      const queue = new Queue("bench", { connection });
      const events = new QueueEvents("bench", { connection });
      await Promise.all([worker.waitUntilReady(), events.waitUntilReady()]);
      await latency(async () => void (await (await queue.add("noop", {})).waitUntilFinished(events)));
    }
  }
}

/** BENCH_LATENCY: one create at a time, each awaited to its end, in this process. */
const latencyRuns = Number(process.env.BENCH_LATENCY ?? 0);
async function latency(once: () => Promise<void>): Promise<void> {
  const { p50, p99 } = await oneAtATime(once, latencyRuns);
  console.log(`latency ${p50} ${p99}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
