/**
 * Follow one task as it changes, push-based: subscribe to the task's channel first, then read its
 * snapshot, so a change that lands between the two is still seen. Snapshots carry a version (`ver`)
 * that orders them; older or repeated ones are dropped. After a reconnect of the subscriber
 * connection (when messages may have been lost) the task is read again.
 */
import { decodeTask, type Task, TERMINAL_STATUSES } from "./domain.js";
import { TaskNotFoundError } from "./errors.js";
import type { Store } from "./redis/store.js";

type Event = { kind: "snapshot"; fields: Record<string, string> } | { kind: "resync" };

/**
 * Yields the task as it is now, then once per change of state; returns after the terminal state or
 * when `signal` aborts. Throws TaskNotFoundError for an unknown id. Releases its subscription on exit.
 */
export async function* watchTask(store: Store, id: string, signal?: AbortSignal): AsyncGenerator<Task, void, undefined> {
  const pending: Event[] = [];
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  const unsubscribe = await store.subscribeTask(id, (fields) => {
    pending.push({ kind: "snapshot", fields });
    notify();
  });
  const stopResync = store.subscriptions.onResync(() => {
    pending.push({ kind: "resync" });
    notify();
  });
  signal?.addEventListener("abort", notify);
  try {
    const first = await store.getTask(id);
    if (!first) throw new TaskNotFoundError(id);
    let task: Task = first;
    yield task;
    while (!TERMINAL_STATUSES.has(task.status)) {
      if (signal?.aborted) return;
      const event = pending.shift();
      if (!event) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      const next: Task | undefined =
        event.kind === "resync" ? await store.getTask(id) : decodeTask(id, { ...event.fields, data: task.fields.data ?? "{}" });
      if (!next) throw new TaskNotFoundError(id);
      if (version(next) <= version(task)) continue;
      task = next;
      yield task;
    }
  } finally {
    unsubscribe();
    stopResync();
    signal?.removeEventListener("abort", notify);
  }
}

function version(task: Task): number {
  return Number(task.fields.ver ?? 0) || 0;
}
