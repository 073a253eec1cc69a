// The lease keeper: runs in a worker thread of each worker process, with its own timer and its own
// Redis connection, so that leases and the worker's heartbeat are renewed even while a handler
// blocks the main thread's event loop.
//
// - Every `renewMs` it pushes the lease deadline (score in the running set) of each task the main
//   thread started to now + `leaseMs` (ZADD XX: a task already recovered by the sweep stays out).
//   A task's lease is renewed only until its own deadline (start + timeout + grace), so a main
//   thread stuck for longer than a task's timeout lets that task's lease lapse and the sweep
//   recovers it.
// - Every `heartbeatMs` it writes the worker hash (fields sent by the main thread, plus
//   last_heartbeat) and renews its expiry.
//
// Plain JavaScript (no build step), since a thread does not share the main thread's TS loader.
import { parentPort, workerData } from "node:worker_threads";
import { Redis } from "ioredis";

const { redis, leaseMs, renewMs, heartbeatMs, workerKey, workersKey, workerName, workerTtlSeconds } = workerData;
const conn = new Redis({ ...redis, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
conn.on("error", () => {}); // renewals are retried on the next tick
conn.once("ready", () => parentPort.postMessage({ type: "ready" }));

/** @type {Map<string, { wipKey: string, until: number }>} */
const tasks = new Map();
/** @type {Record<string, string>} */
let fields = {};
let lastBeat = 0;

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
    const args = byKey.get(task.wipKey) ?? [];
    args.push(String(now + leaseMs), id);
    byKey.set(task.wipKey, args);
  }
  const pipeline = conn.pipeline();
  for (const [key, args] of byKey) pipeline.zadd(key, "XX", ...args);
  if (now - lastBeat >= heartbeatMs) {
    lastBeat = now;
    pipeline.hset(workerKey, { ...fields, last_heartbeat: new Date(now).toISOString().replace("Z", "000Z") });
    pipeline.expire(workerKey, workerTtlSeconds);
    pipeline.sadd(workersKey, workerName);
  }
  if (pipeline.length > 0) pipeline.exec().catch(() => {});
}
