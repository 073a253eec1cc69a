// The lease keeper: runs in a worker thread of each worker process, with its own timer and its own
// Redis connection, so that leases and the worker's heartbeat are renewed even while a handler
// blocks the main thread's event loop.
//
// - Every `renewMs` it pushes the lease deadline (score in the running set) of each task in the
//   lease table (lease-table.ts: memory the main thread writes as tasks start and end) to now + `leaseMs` by Redis's clock (renew.lua; a task already recovered by the
//   sweep stays out). A task's lease is renewed only until its own deadline (start + timeout +
//   grace, by this process's clock: a local duration), so a main thread stuck for longer than a
//   task's timeout lets that task's lease lapse and the sweep recovers it.
// - Every `heartbeatMs` it writes the worker hash (fields sent by the main thread, plus
//   last_heartbeat by Redis's clock) and renews its expiry, and adds the worker to `mq:workers`
//   and its queues to `mq:queues` again: a Redis that lost its data (FLUSHALL, a restart without
//   persistence) hears of them within one heartbeat, and at once after a reconnect.
//
// Started by leases.ts (the main thread's side), which imports only this file's types. Built, it is
// lease-keeper.js; run from the sources, leases.ts starts the thread with tsx loaded.
import { parentPort as port, workerData } from "node:worker_threads";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import { LeaseTableReader, type TableMemory } from "./lease-table.js";

/** What the main thread hands the thread at its start (plain data only). */
export interface KeeperData {
  /** ioredis options without functions; `clusterNodes` set for a Redis Cluster. */
  redis: RedisOptions & { clusterNodes?: Array<{ host: string; port: number }> };
  leaseMs: number;
  renewMs: number;
  heartbeatMs: number;
  workerKey: string;
  workersKey: string;
  workerName: string;
  workerTtlSeconds: number;
  queuesKey: string;
  queueKeys: string[];
  /** The running sets of the worker's handlers, by the index the lease table's entries name. */
  wipKeys: string[];
  /** The table of running tasks (lease-table.ts), written by the main thread. */
  table: TableMemory;
  renewLua: string;
  heartbeatLua: string;
}

/** Messages from the main thread. */
export type KeeperMessage =
  /** The lease table moved to larger memory. */
  | { type: "table"; memory: TableMemory }
  /** A handler's running set joins the list (its tasks' entries name `index`). */
  | { type: "handler"; index: number; wipKey: string }
  /** The worker hash fields to write with each heartbeat. */
  | { type: "info"; fields: Record<string, string> }
  | { type: "stop" };

/** Messages to the main thread: the connection is up (sent once). */
export type KeeperEvent = { type: "ready" };

/** The commands this thread defines on its connection. */
interface KeeperCommands {
  renewLeases(key: string, leaseMs: number, ...ids: string[]): Promise<unknown>;
  writeWorker(key: string, ttlSeconds: number, ...fields: string[]): Promise<unknown>;
}

if (!port) throw new Error("lease-keeper runs as a worker thread (leases.ts starts it)");
const parentPort = port;
const data = workerData as KeeperData;
const { redis, leaseMs, renewMs, heartbeatMs, workerKey, workersKey, workerName, workerTtlSeconds } = data;
const { queuesKey, queueKeys, renewLua, heartbeatLua } = data;
const wipKeys = [...data.wipKeys];
const table = new LeaseTableReader(data.table);
const { clusterNodes, ...redisOptions } = redis;
const options: RedisOptions = { ...redisOptions, enableOfflineQueue: false, maxRetriesPerRequest: 0 };
// On a Redis Cluster each command goes to its key's master.
const conn = (
  clusterNodes
    ? new Cluster(clusterNodes, { enableOfflineQueue: false, scaleReads: "master", redisOptions: { ...options, db: 0 } })
    : new Redis(options)
) as (Redis | Cluster) & KeeperCommands;
// EVALSHA, and EVAL when Redis does not know the script (ioredis does both).
conn.defineCommand("renewLeases", { numberOfKeys: 1, lua: renewLua });
conn.defineCommand("writeWorker", { numberOfKeys: 1, lua: heartbeatLua });
conn.on("error", () => {}); // renewals are retried on the next tick
let connected = false;
conn.on("ready", () => {
  // After a reconnect Redis may have come back empty: beat at the next tick.
  if (connected) lastBeat = 0;
  else parentPort.postMessage({ type: "ready" } satisfies KeeperEvent);
  connected = true;
});

let fields: Record<string, string> = {};
// The main thread wrote the first heartbeat as the worker started.
let lastBeat = Date.now();

parentPort.on("message", (msg: KeeperMessage) => {
  if (msg.type === "table") table.moved(msg.memory);
  else if (msg.type === "handler") wipKeys[msg.index] = msg.wipKey;
  else if (msg.type === "info") fields = msg.fields;
  else if (msg.type === "stop") {
    clearInterval(timer);
    conn
      .quit()
      .catch(() => conn.disconnect())
      .finally(() => parentPort.close());
  }
});

const timer = setInterval(tick, renewMs);

function tick(): void {
  if (conn.status !== "ready") return;
  const now = Date.now();
  const byKey = new Map<string, string[]>();
  table.forEach((id, handlerIndex, until) => {
    const wipKey = wipKeys[handlerIndex];
    if (now > until || wipKey === undefined) return; // past its own deadline: let the lease lapse
    const ids = byKey.get(wipKey) ?? [];
    ids.push(id);
    byKey.set(wipKey, ids);
  });
  // Separate commands written at once, not a pipeline: on a cluster their keys live in different
  // slots, and none of them needs to be atomic with another.
  const sent: Array<Promise<unknown>> = [];
  for (const [key, ids] of byKey) sent.push(conn.renewLeases(key, leaseMs, ...ids));
  if (now - lastBeat >= heartbeatMs) {
    lastBeat = now;
    sent.push(conn.writeWorker(workerKey, workerTtlSeconds, ...Object.entries(fields).flat()));
    sent.push(conn.sadd(workersKey, workerName));
    if (queueKeys.length > 0) sent.push(conn.sadd(queuesKey, ...queueKeys));
  }
  for (const p of sent) p.catch(() => {}); // retried on the next tick
}
