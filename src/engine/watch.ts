/**
 * Follow one task as it changes, push-based: subscribe to the task's channel first, then read its
 * snapshot, so a change that lands between the two is still seen. Snapshots carry a version (`ver`)
 * that orders them; older or repeated ones are dropped. After a reconnect of the subscriber
 * connection (when messages may have been lost) the task is read again.
 */
import { decodeTask, type Task, TERMINAL_STATUSES } from "../core/domain.js";
import { StoreUnavailableError, TaskNotFoundError } from "../core/errors.js";
import type { Store } from "../store/store.js";

type Event =
  | { kind: "snapshot"; fields: Record<string, string> }
  | { kind: "read"; task: Task | undefined }
  | { kind: "failed"; error: unknown }
  | { kind: "lost" }
  | { kind: "resync" }
  | { kind: "outage" };

/** How long a watch waits for Redis to come back before it ends with StoreUnavailableError. */
export const WATCH_OUTAGE_MS = 10_000;

/**
 * Yields the task as it is now, then once per change of state; returns after the terminal state or
 * when `signal` aborts. Throws TaskNotFoundError for an unknown id, and StoreUnavailableError when
 * the subscriber connection stays down longer than `outageMs`. Releases its subscription on exit.
 *
 * `here.task`: the task as this process's worker started it, when it runs it now. It is the first
 * snapshot, with no wait for Redis, and `here.end` brings the end of the run from the worker as
 * soon as it is recorded. The subscription to the task's channel, and a read after it, are
 * made meanwhile (for changes made elsewhere: progress, a cancel, the sweep taking the task back),
 * or, with `here.endOnly` (a caller that only waits for the end), only if the run does not end the
 * task (a retry, a requeue, a lease lost to the sweep, an end that could not be recorded).
 */
export async function* watchTask(
  store: Store,
  id: string,
  signal?: AbortSignal,
  outageMs = WATCH_OUTAGE_MS,
  here?: { task: Task; end: Promise<Record<string, string> | undefined>; endOnly?: boolean },
): AsyncGenerator<Task, void, undefined> {
  const pending: Event[] = [];
  let wake: (() => void) | undefined;
  const push = (event: Event) => {
    pending.push(event);
    wake?.();
    wake = undefined;
  };
  const onSnapshot = (fields: Record<string, string>) => push({ kind: "snapshot", fields });
  let unsubscribe: (() => void) | undefined;
  let closed = false;
  let subscribed: Promise<void> | undefined;
  const subscribe = () =>
    (subscribed ??= store.subscribeTask(id, onSnapshot).then((stop) => {
      if (closed) stop();
      else unsubscribe = stop;
    }));
  // Subscribe, then read: changes are seen from the read on, and none between is lost.
  const subscribeAndRead = () =>
    subscribe()
      .then(() => store.getTask(id))
      .then(
        (now) => push({ kind: "read", task: now }),
        (error: unknown) => push({ kind: "failed", error }),
      );
  let outage: NodeJS.Timeout | undefined;
  const stopResync = store.subscriptions.onResync(() => {
    clearTimeout(outage);
    outage = undefined;
    push({ kind: "resync" });
  });
  const stopDown = store.subscriptions.onDown(() => {
    outage ??= setTimeout(() => push({ kind: "outage" }), outageMs);
  });
  const onAbort = () => {
    wake?.();
    wake = undefined;
  };
  signal?.addEventListener("abort", onAbort);
  try {
    let task: Task;
    if (here) {
      task = here.task;
      // The worker's word on the run: the task's fields as recorded, or undefined (read Redis).
      void here.end.then((fields) => push(fields ? { kind: "snapshot", fields } : { kind: "lost" }));
      if (!here.endOnly) void subscribeAndRead();
    } else {
      await subscribe();
      const first = await store.getTask(id);
      if (!first) throw new TaskNotFoundError(id);
      task = first;
    }
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
      if (event.kind === "failed") throw event.error;
      if (event.kind === "snapshot" && event.fields.status === "deleted") throw new TaskNotFoundError(id); // DeleteTask
      let next: Task | undefined = task;
      if (event.kind === "resync") next = await readAfterReconnect(store, id, outageMs);
      else if (event.kind === "read") next = event.task;
      else if (event.kind === "snapshot") next = decodeTask(id, { ...event.fields, data: task.fields.data ?? "{}" });
      if (!next) throw new TaskNotFoundError(id);
      if (next.version > task.version) {
        task = next;
        yield task;
      }
      // The run here did not end the task: what happens next happens in Redis.
      if (!subscribed && !TERMINAL_STATUSES.has(task.status)) void subscribeAndRead();
    }
  } finally {
    closed = true;
    unsubscribe?.();
    subscribed?.catch(() => {}); // a subscription that failed after the watch ended
    stopResync();
    stopDown();
    clearTimeout(outage);
    signal?.removeEventListener("abort", onAbort);
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
