/**
 * Helpers shared by the benchmark's processes: statistics, child processes that talk in lines,
 * Redis counters.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Redis } from "ioredis";

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

/** A child process (node + tsx) that prints lines; `line(re)` waits for the next matching one. */
export interface Child {
  proc: ChildProcess;
  line(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  send(text: string): void;
  stop(): Promise<void>;
}

export function child(script: string, args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn("node", ["--import", "tsx", script, ...args], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => {
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
