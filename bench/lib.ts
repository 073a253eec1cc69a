/**
 * Helpers shared by the benchmark's processes: statistics, child processes that talk in lines,
 * Redis counters.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { ClientHttp2Session } from "node:http2";
import { createInterface } from "node:readline";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import { WatchTaskRequestSchema, type WatchTaskResponse, WatchTaskResponseSchema } from "../gen/baichuan/v1/task_pb.js";

export const NOOP = "/bench/noop";

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Latency of `once`, run one at a time: 50 runs to warm up, then `runs` timed ones; p50 and p99 in
 * milliseconds.
 */
export async function oneAtATime(once: () => Promise<void>, runs: number): Promise<{ p50: number; p99: number }> {
  for (let i = 0; i < 50; i++) await once();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await once();
    samples.push(performance.now() - t0);
  }
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

/** A child process (node + tsx) that prints lines; `line(re)` waits for the next matching one. */
export interface Child {
  proc: ChildProcess;
  line(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  send(text: string): void;
  stop(): Promise<void>;
}

export function child(script: string, args: string[], env: Record<string, string> = {}): Child {
  // BENCH_NODE_ARGS: extra node flags for the child processes (e.g. "--cpu-prof --cpu-prof-dir=prof").
  const nodeArgs = process.env.BENCH_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
  return command("node", [...nodeArgs, "--import", "tsx", script, ...args], env);
}

/**
 * Any command as a Child; `from: "stderr"` reads the lines of its standard error instead (the
 * service logs there) and lets its standard output through.
 */
export function command(
  file: string,
  args: string[],
  env: Record<string, string> = {},
  from: "stdout" | "stderr" = "stdout",
): Child {
  const script = [file, ...args].join(" ");
  const proc = spawn(file, args, {
    env: { ...process.env, ...env },
    stdio: from === "stdout" ? ["pipe", "pipe", "inherit"] : ["pipe", "inherit", "pipe"],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: (from === "stdout" ? proc.stdout : proc.stderr)! }).on("line", (l) => {
    lines.push(l);
    for (const w of waiters.splice(0)) w();
  });
  return {
    proc,
    send: (text) => proc.stdin!.write(`${text}\n`),
    async line(re, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = lines.findIndex((l) => re.test(l));
        if (i >= 0) return re.exec(lines.splice(0, i + 1).at(-1)!)!;
        if (proc.exitCode !== null) throw new Error(`${script} exited (${proc.exitCode}) before printing ${re}`);
        if (Date.now() > deadline) throw new Error(`${script} did not print ${re} in time`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** Total Redis commands executed so far (INFO commandstats), less the INFO calls themselves. */
export async function commandCount(client: Redis): Promise<number> {
  const info = await client.info("commandstats");
  let total = 0;
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (m[1] !== "info") total += Number(m[2]);
  return total;
}

export async function usedMemory(client: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info("memory"))![1]);
}

/** Resident memory of a process, from /proc (Linux). */
export async function rssBytes(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * WatchTask over plain gRPC with node:http2 and no RPC library: the lightest client, so that the
 * watchers' own cost (10,000 of them share the benchmark's process and the server's two cores)
 * weighs as little as possible on the server's figures. Calls `onMessage` for each message;
 * resolves when the stream ends.
 */
export function rawWatch(
  session: ClientHttp2Session,
  taskId: string,
  onMessage: (message: WatchTaskResponse) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const body = toBinary(WatchTaskRequestSchema, create(WatchTaskRequestSchema, { taskId }));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    const stream = session.request({
      ":method": "POST",
      ":path": "/baichuan.v1.TaskService/WatchTask",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let pending: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const length = pending.readUInt32BE(1);
        if (pending.length < 5 + length) break;
        onMessage(fromBinary(WatchTaskResponseSchema, pending.subarray(5, 5 + length)));
        pending = pending.subarray(5 + length);
      }
    });
    stream.on("close", () => resolve());
    stream.on("error", reject);
    stream.end(frame);
  });
}

/**
 * The library as users get it: the built package (dist/, `npm run build`; bench/run.ts builds it
 * when it is missing or stale), not the TypeScript sources run through tsx.
 */
export async function library(): Promise<typeof import("../src/index.js")> {
  return (await import(LIBRARY)) as typeof import("../src/index.js");
}
const LIBRARY = "../dist/src/index.js";
