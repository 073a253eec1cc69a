// The lease keeper: runs in a worker thread of each worker process, with its own timer and its own
// Redis connection, so that leases and the worker's heartbeat are renewed even while a handler
// blocks the main thread's event loop.
//
// - Every `renewMs` it pushes the lease deadline (score in the running set) of each task the main
//   thread started to now + `leaseMs` by Redis's clock (renew.lua; a task already recovered by the
//   sweep stays out). A task's lease is renewed only until its own deadline (start + timeout +
//   grace, by this process's clock: a local duration), so a main thread stuck for longer than a
//   task's timeout lets that task's lease lapse and the sweep recovers it.
// - Every `heartbeatMs` it writes the worker hash (fields sent by the main thread, plus
//   last_heartbeat by Redis's clock) and renews its expiry, and adds the worker to `mq:workers`
//   and its queues to `mq:queues` again: a Redis that lost its data (FLUSHALL, a restart without
//   persistence) hears of them within one heartbeat, and at once after a reconnect.
//
// Plain JavaScript (no build step), since a thread does not share the main thread's TS loader.
import { parentPort, workerData } from "node:worker_threads";
import { Cluster, Redis } from "ioredis";

const { redis, leaseMs, renewMs, heartbeatMs, workerKey, workersKey, workerName, workerTtlSeconds } = workerData;
const { queuesKey, queueKeys, renewLua, heartbeatLua } = workerData;
const { clusterNodes, ...redisOptions } = redis;
const options = { ...redisOptions, enableOfflineQueue: false, maxRetriesPerRequest: 0 };
// On a Redis Cluster each command goes to its key's master.
const conn = clusterNodes
  ? new Cluster(clusterNodes, { enableOfflineQueue: false, scaleReads: "master", redisOptions: { ...options, db: 0 } })
  : new Redis(options);
// EVALSHA, and EVAL when Redis does not know the script (ioredis does both).
conn.defineCommand("renewLeases", { numberOfKeys: 1, lua: renewLua });
conn.defineCommand("writeWorker", { numberOfKeys: 1, lua: heartbeatLua });
conn.on("error", () => {}); // renewals are retried on the next tick
let connected = false;
conn.on("ready", () => {
  // After a reconnect Redis may have come back empty: beat at the next tick.
  if (connected) lastBeat = 0;
  else parentPort.postMessage({ type: "ready" });
  connected = true;
});

/** @type {Map<string, { wipKey: string, until: number }>} */
const tasks = new Map();
/** @type {Record<string, string>} */
let fields = {};
// The main thread wrote the first heartbeat as the worker started.
let lastBeat = Date.now();

parentPort.on("message", (msg) => {
  if (msg.type === "batch") {
    // Ends first: they are of tasks started in earlier messages (a task started again since, by a
    // retry, is among this message's starts).
    for (const id of msg.ends) tasks.delete(id);
    for (const [id, wipKey, until] of msg.starts) tasks.set(id, { wipKey, until });
  } else if (msg.type === "info") fields = msg.fields;
  else if (msg.type === "stop") {
    clearInterval(timer);
    conn
      .quit()
      .catch(() => conn.disconnect())
      .finally(() => parentPort.close());
  }
});

const timer = setInterval(tick, renewMs);

function tick() {
  if (conn.status !== "ready") return;
  const now = Date.now();
  const byKey = new Map();
  for (const [id, task] of tasks) {
    if (now > task.until) continue; // past its own deadline: let the lease lapse
    const ids = byKey.get(task.wipKey) ?? [];
    ids.push(id);
    byKey.set(task.wipKey, ids);
  }
  // Separate commands written at once, not a pipeline: on a cluster their keys live in different
  // slots, and none of them needs to be atomic with another.
  const sent = [];
  for (const [key, ids] of byKey) sent.push(conn.renewLeases(key, leaseMs, ...ids));
  if (now - lastBeat >= heartbeatMs) {
    lastBeat = now;
    sent.push(conn.writeWorker(workerKey, workerTtlSeconds, ...Object.entries(fields).flat()));
    sent.push(conn.sadd(workersKey, workerName));
    if (queueKeys.length > 0) sent.push(conn.sadd(queuesKey, ...queueKeys));
  }
  for (const p of sent) p.catch(() => {}); // retried on the next tick
}
