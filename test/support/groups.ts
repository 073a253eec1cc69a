/**
 * Concurrency keys in tests (lua/lib/groups.lua): the handler's per-key cap, written straight into
 * its limits hash (keys.limitsKey, field `max_running_per_key`) by the tests that run no listener
 * (groups.test.ts sets it with SetQueueLimits), the groups' keys left in Redis, and the most tasks
 * of one key that ran at once.
 */
import type { Cluster, Redis } from "ioredis";
import type { Task } from "../../src/core/domain.js";
import * as keys from "../../src/store/keys.js";
import { msFromIso } from "./time.js";

/** Set a handler's max_running_per_key (0: no cap) as SetQueueLimits would store it. */
export async function setMaxRunningPerKey(client: Redis | Cluster, handler: string, n: number): Promise<void> {
  await client.hset(keys.limitsKey(handler), "max_running_per_key", String(n));
}

/**
 * The group bookkeeping keys of a handler that still exist, for `concurrencyKeys` (their sets),
 * the ring, the running counts and the grouped set (the info hash, a counter, is left out): none
 * once every task ended.
 */
export async function groupKeysLeft(client: Redis | Cluster, handler: string, concurrencyKeys: string[]): Promise<string[]> {
  const [ring, running, grouped] = keys.groupKeys(handler);
  const names = [ring, running, grouped, ...concurrencyKeys.map((k) => keys.groupQueueKey(handler, k))];
  const exists = await Promise.all(names.map((name) => client.exists(name)));
  return names.filter((_, i) => exists[i] === 1);
}

/**
 * Per concurrency key, the most of its tasks that ran at once, from their started_at and ended_at
 * (Redis's clock: a key's slot is freed by the script that writes ended_at, before the next start).
 */
export function mostAtOnce(tasks: Task[]): Map<string, number> {
  const events = new Map<string, Array<[at: number, step: number]>>();
  for (const t of tasks) {
    if (!t.concurrencyKey) continue;
    const list = events.get(t.concurrencyKey) ?? [];
    list.push([msFromIso(t.startedAt), 1], [msFromIso(t.endedAt), -1]);
    events.set(t.concurrencyKey, list);
  }
  const most = new Map<string, number>();
  for (const [key, list] of events) {
    // An end and a start at the same instant: the end first (half-open runs).
    list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let now = 0;
    let peak = 0;
    for (const [, step] of list) {
      now += step;
      peak = Math.max(peak, now);
    }
    most.set(key, peak);
  }
  return most;
}
