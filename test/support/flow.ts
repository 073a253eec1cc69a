/**
 * Flow-control checks from the tasks' own times (started_at, ended_at: Redis's clock).
 */
import type { Task } from "../../src/core/domain.js";
import { msFromIso } from "./time.js";

/**
 * The most tasks whose [started_at, ended_at) intervals overlap: the most running at once (an end
 * counts before a start at the same time: finish.lua freed the slot before fetch.lua took it).
 */
export function mostAtOnce(tasks: Task[]): number {
  const events = tasks.flatMap(
    (t): Array<[number, number]> => [
      [msFromIso(t.startedAt), 1],
      [msFromIso(t.endedAt), -1],
    ],
  );
  if (!events.every(([at]) => Number.isFinite(at))) throw new Error("a task has no start or end time");
  events.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let now = 0;
  let most = 0;
  for (const [, delta] of events) {
    now += delta;
    most = Math.max(most, now);
  }
  return most;
}

/** Starts per second after the first `burst` (which spend a full bucket at once). */
export function steadyRate(tasks: Task[], burst: number): { rate: number; seconds: number } {
  const steady = tasks
    .map((t) => msFromIso(t.startedAt))
    .sort((x, y) => x - y)
    .slice(burst);
  const seconds = (steady.at(-1)! - steady[0]!) / 1000;
  return { rate: (steady.length - 1) / seconds, seconds };
}
