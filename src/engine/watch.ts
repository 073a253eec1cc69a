/**
 * Follow one task as it changes, push-based: subscribe to the task's channel first, then read its
 * snapshot, so a change that lands between the two is still seen. Snapshots carry a version (`ver`)
 * that orders them; older or repeated ones are dropped. After a reconnect of the subscriber
 * connection (when messages may have been lost) the task is read again.
 */
import { decodeTask, type Task, TERMINAL_STATUSES } from "../core/domain.js";
import { StoreUnavailableError, TaskNotFoundError } from "../core/errors.js";
import type { Store } from "../store/store.js";

type Event = { kind: "snapshot"; fields: Record<string, string> } | { kind: "resync" } | { kind: "outage" };

/** How long a watch waits for Redis to come back before it ends with StoreUnavailableError. */
export const WATCH_OUTAGE_MS = 10_000;

/**
 * Yields the task as it is now, then once per change of state; returns after the terminal state or
 * when `signal` aborts. Throws TaskNotFoundError for an unknown id, and StoreUnavailableError when
 * the subscriber connection stays down longer than `outageMs`. Releases its subscription on exit.
 */
export async function* watchTask(
  store: Store,
  id: string,
  signal?: AbortSignal,
  outageMs = WATCH_OUTAGE_MS,
): AsyncGenerator<Task, void, undefined> {
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
  let outage: NodeJS.Timeout | undefined;
  const stopResync = store.subscriptions.onResync(() => {
    clearTimeout(outage);
    outage = undefined;
    pending.push({ kind: "resync" });
    notify();
  });
  const stopDown = store.subscriptions.onDown(() => {
    outage ??= setTimeout(() => {
      pending.push({ kind: "outage" });
      notify();
    }, outageMs);
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
      if (event.kind === "outage")
        throw new StoreUnavailableError(undefined, { detail: `the connection was down for ${outageMs} ms` });
      if (event.kind === "snapshot" && event.fields.status === "deleted") throw new TaskNotFoundError(id); // DeleteTask
      const next: Task | undefined =
        event.kind === "resync"
          ? await readAfterReconnect(store, id, outageMs)
          : decodeTask(id, { ...event.fields, data: task.fields.data ?? "{}" });
      if (!next) throw new TaskNotFoundError(id);
      if (next.version <= task.version) continue;
      task = next;
      yield task;
    }
  } finally {
    unsubscribe();
    stopResync();
    stopDown();
    clearTimeout(outage);
    signal?.removeEventListener("abort", notify);
  }
}

/**
 * Read the task after the subscriber connection came back. The command connection reconnects on
 * its own and may not be up yet: retry for up to `outageMs`.
 */
async function readAfterReconnect(store: Store, id: string, outageMs: number): Promise<Task | undefined> {
  const deadline = Date.now() + outageMs;
  for (;;) {
    try {
      return await store.getTask(id);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError) || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
