/**
 * The main thread's side of the lease keeper (lease-keeper.ts): starts the thread, keeps the table
 * of running tasks it reads (lease-table.ts, shared memory), and tells it what the worker hash says.
 */
import { Worker as Thread } from "node:worker_threads";
import * as keys from "../store/keys.js";
import type { RedisSettings } from "../store/redis-url.js";
import { Store, WORKER_TTL_SECONDS } from "../store/store.js";
import type { KeeperData, KeeperEvent, KeeperMessage } from "./lease-keeper.js";
import { LeaseTable } from "./lease-table.js";

/**
 * Start the thread. Built, it runs lease-keeper.js. Run from the sources (this file is TypeScript,
 * run by tsx or vitest), lease-keeper.ts, which a thread cannot load by itself: it does not share
 * the process's loader, and Node 20 runs no `--import` in a thread. A bootstrap registers tsx in
 * the thread first.
 */
function startThread(workerData: KeeperData): Thread {
  if (!import.meta.url.endsWith(".ts")) return new Thread(new URL("./lease-keeper.js", import.meta.url), { workerData });
  const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
  const keeper = JSON.stringify(new URL("./lease-keeper.ts", import.meta.url).href);
  const bootstrap = `import(${tsx}).then((tsx) => { tsx.register(); return import(${keeper}); });`;
  return new Thread(bootstrap, { eval: true, workerData });
}

export interface LeaseTiming {
  /** A started task is recovered when its lease is not renewed within this time. */
  leaseMs: number;
  /** How often leases are renewed (a quarter of the lease). */
  renewMs: number;
  /** How often the worker hash is written. */
  heartbeatMs: number;
}

export class LeaseKeeper {
  private readonly thread: Thread;
  /** Resolves once the thread's connection is up (or after 30 s without). */
  readonly ready: Promise<void>;

  private readonly table: LeaseTable;
  /** Index of each handler's running set in the keeper's list. */
  private readonly handlerIndex = new Map<string, number>();

  /** `handlers`: the worker's handlers, whose queues each heartbeat adds to `mq:queues` again. */
  constructor(redis: RedisSettings, workerName: string, handlers: readonly string[], timing: LeaseTiming, capacity = 64) {
    for (const [i, handler] of handlers.entries()) this.handlerIndex.set(handler, i);
    this.table = new LeaseTable(capacity, (memory) => this.post({ type: "table", memory }));
    // Only plain data crosses to the thread (ioredis options may hold functions).
    const plain = Object.fromEntries(Object.entries(redis).filter(([, v]) => typeof v !== "function"));
    const workerData: KeeperData = {
      redis: plain,
      ...timing,
      workerKey: keys.workerKey(workerName),
      workersKey: keys.WORKERS_KEY,
      workerName,
      workerTtlSeconds: WORKER_TTL_SECONDS,
      queuesKey: keys.QUEUES_KEY,
      queueKeys: handlers.map(keys.queueKey),
      wipKeys: handlers.map(keys.wipKey),
      table: this.table.memory,
      renewLua: Store.scriptText("renew"),
      heartbeatLua: Store.scriptText("heartbeat"),
    };
    this.thread = startThread(workerData);
    this.thread.unref();
    this.ready = new Promise((resolve) => {
      // Redis down: the thread keeps trying on its own (fetches fail meanwhile anyway).
      const timer = setTimeout(resolve, 30_000);
      this.thread.on("message", (msg: KeeperEvent) => {
        if (msg.type !== "ready") return;
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * A task started: renew its lease until `until` (epoch ms) unless `end` comes first. Written to
   * the shared table at once: a handler that blocks this thread right after is already covered.
   */
  start(taskId: string, handler: string, until: number): void {
    let index = this.handlerIndex.get(handler);
    if (index === undefined) {
      // Not one of the handlers the worker started with (a task of a handler not registered here):
      // its running set joins the keeper's list.
      index = this.handlerIndex.size;
      this.handlerIndex.set(handler, index);
      this.post({ type: "handler", index, wipKey: keys.wipKey(handler) });
    }
    this.table.start(taskId, index, until);
  }

  /** A task ended: its lease is no longer renewed (finish.lua took it out of the running set). */
  end(taskId: string): void {
    this.table.end(taskId);
  }

  /** The worker hash fields to write with each heartbeat. */
  info(fields: Record<string, string>): void {
    this.post({ type: "info", fields });
  }

  private post(msg: KeeperMessage): void {
    this.thread.postMessage(msg);
  }

  async stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.thread.once("exit", () => resolve()));
    this.post({ type: "stop" });
    const timer = setTimeout(() => void this.thread.terminate(), 2000);
    await exited;
    clearTimeout(timer);
  }
}
