/**
 * The main thread's side of the lease keeper (lease-keeper.ts): starts the thread and tells it
 * which tasks run, until when, and what the worker hash says.
 */
import { Worker as Thread } from "node:worker_threads";
import * as keys from "../store/keys.js";
import type { RedisSettings } from "../store/redis-url.js";
import { Store, WORKER_TTL_SECONDS } from "../store/store.js";
import type { KeeperData, KeeperEvent, KeeperMessage } from "./lease-keeper.js";

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

/** Longest an ended task stays on the keeper's list (see LeaseKeeper.end). */
const ENDS_DELAY_MS = 500;

export class LeaseKeeper {
  private readonly thread: Thread;
  /** Resolves once the thread's connection is up (or after 30 s without). */
  readonly ready: Promise<void>;

  /** `handlers`: the worker's handlers, whose queues each heartbeat adds to `mq:queues` again. */
  constructor(redis: RedisSettings, workerName: string, handlers: readonly string[], timing: LeaseTiming) {
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
   * A task started: renew its lease until `until` (epoch ms) unless `end` comes first. Starts are
   * sent in one message per burst (a microtask later), before any handler of a fetched batch runs,
   * so a handler that blocks at once is already covered.
   */
  start(taskId: string, handler: string, until: number): void {
    if (this.starts.length === 0) queueMicrotask(() => this.flush());
    this.starts.push(`${taskId}\t${keys.wipKey(handler)}\t${until}`);
  }

  /**
   * A task ended. Ends travel with the next starts, or within ENDS_DELAY_MS: a late end costs at
   * most one renewal of a lease no longer held, which does nothing (renew.lua's ZADD XX: the task
   * left the running set when its end was recorded).
   */
  end(taskId: string): void {
    this.ends.push(taskId);
    this.endsTimer ??= setTimeout(() => this.flush(), ENDS_DELAY_MS).unref();
  }

  /** Lines of the next batch (KeeperMessage). Task ids and handler names hold no tab or newline. */
  private starts: string[] = [];
  private ends: string[] = [];
  private endsTimer: NodeJS.Timeout | undefined;

  private flush(): void {
    clearTimeout(this.endsTimer);
    this.endsTimer = undefined;
    this.post({ type: "batch", starts: this.starts.join("\n"), ends: this.ends.join("\n") });
    this.starts = [];
    this.ends = [];
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
