/**
 * Operations for the people who run BaiChuan: queues with their counts and limits, live workers, a
 * handler's tasks by state a page at a time, emptying a queue by state, and a queue's flow limits,
 * pause and resume. Served as `baichuan.v1.AdminService`
 * (api/admin-service.ts) and as the original's admin URLs (legacy/canghai.ts). A token with handler
 * patterns sees only the handlers it covers.
 */
import { checkGrant, type Grant } from "../core/auth.js";
import { microsFromIso, type Task, type TaskStatus, TERMINAL_STATUSES } from "../core/domain.js";
import { InvalidArgumentError } from "../core/errors.js";
import { checkHandlerName, checkQueueLimits } from "../core/validate.js";
import { type QueueStats, STATUS_INDEXES, type Store } from "../store/store.js";

export type { QueueStats };

const DEFAULT_PAGE = 50;
const MAX_PAGE = 1000;

/** A live worker, as its hash describes it. */
export interface WorkerView {
  name: string;
  hostname: string;
  pid: number;
  handlers: string[];
  state: string;
  startedAt: string;
  heartbeatAgeMs: number | undefined;
  finished: number;
  failed: number;
  busySeconds: number;
}

export class Admin {
  constructor(private readonly store: Store) {}

  /** Every handler with a queue, by name. */
  queuedHandlers(): Promise<string[]> {
    return this.store.queries.queuedHandlers();
  }

  /** The counts of these handlers' queues. */
  queueStats(handlers: string[]): Promise<QueueStats[]> {
    return this.store.queries.queueStats(handlers);
  }

  /** Every handler with a queue that `grant` covers, by name, with its counts. */
  async queues(grant: Grant): Promise<QueueStats[]> {
    const handlers = (await this.store.queries.queuedHandlers()).filter((h) => grant.allows(h)).sort();
    return this.store.queries.queueStats(handlers);
  }

  /**
   * Replace a handler's flow limits (each 0 for none), obeyed by every process at once (the next
   * fetch reads them; held workers are told). Checked first: bad limits change nothing. Returns the
   * queue as it is after the change.
   */
  async setLimits(handler: string, limits: unknown, grant: Grant): Promise<QueueStats> {
    const name = this.checkHandler(handler, grant);
    const checked = checkQueueLimits(limits);
    await this.store.flow.setLimits(name, checked);
    return this.queueAfterChange(name);
  }

  /** Pause (true) or resume (false) a handler: while paused, no process starts its tasks. Idempotent. */
  async setPaused(handler: string, paused: boolean, grant: Grant): Promise<QueueStats> {
    const name = this.checkHandler(handler, grant);
    await this.store.flow.setPaused(name, paused);
    return this.queueAfterChange(name);
  }

  private checkHandler(handler: string, grant: Grant): string {
    const name = checkHandlerName(handler);
    checkGrant(grant, name);
    return name;
  }

  /** The queue's counts and limits after a change; it is listed from now on (ListQueues). */
  private async queueAfterChange(handler: string): Promise<QueueStats> {
    await this.store.creator.registerQueue(handler);
    return (await this.store.queries.queueStats([handler]))[0]!;
  }

  /** Live workers, by name, with the handlers `grant` covers (workers with none are left out). */
  async workers(grant: Grant): Promise<WorkerView[]> {
    const [workers, now] = await Promise.all([this.store.queries.workers(), this.store.timeMs()]); // last_heartbeat is by Redis's clock
    return workers.flatMap(({ name, fields }) => {
      const handlers = (fields.queues ?? "").split(",").filter((h) => h && grant.allows(h));
      if (handlers.length === 0) return [];
      const beat = fields.last_heartbeat ? microsFromIso(fields.last_heartbeat) / 1000 : Number.NaN;
      return [
        {
          name,
          hostname: fields.hostname ?? "",
          pid: Number(fields.pid) || 0,
          handlers,
          state: fields.state ?? "",
          startedAt: fields.birth ?? "",
          heartbeatAgeMs: Number.isFinite(beat) ? Math.max(0, now - beat) : undefined,
          finished: Number(fields.successful_msg_count) || 0,
          failed: Number(fields.failed_msg_count) || 0,
          busySeconds: Number(fields.total_working_time) || 0,
        },
      ];
    });
  }

  /**
   * One page of a handler's tasks in one state. `pageToken` comes from the previous page: for
   * live states `<index>:<offset>` in the handler's queue/scheduled/running sets (best effort: a
   * live queue moves between pages), for ended states `x:<SCAN cursor>:<matches of that step
   * already returned>`.
   */
  async tasks(
    handler: string,
    status: string,
    pageSize: number,
    pageToken: string,
    grant: Grant,
  ): Promise<{ tasks: Task[]; nextPageToken: string }> {
    checkHandlerName(handler);
    checkGrant(grant, handler);
    const size = pageSize === 0 ? DEFAULT_PAGE : pageSize;
    if (!Number.isInteger(size) || size < 1 || size > MAX_PAGE) {
      throw new InvalidArgumentError("page_size", `must be between 1 and ${MAX_PAGE} (0 for ${DEFAULT_PAGE})`);
    }
    if (TERMINAL_STATUSES.has(status as TaskStatus)) {
      const [cursor, skip] = (parseToken(pageToken, /^x:(\d{1,20}):(\d{1,4})$/, 2) ?? "0:0").split(":") as [string, string];
      const page = await this.store.queries.scanTasks(handler, status, { cursor, skip: Number(skip) }, size);
      return { tasks: page.tasks, nextPageToken: page.next ? `x:${page.next.cursor}:${page.next.skip}` : "" };
    }
    const indexes = STATUS_INDEXES[status as keyof typeof STATUS_INDEXES];
    if (!indexes) throw new InvalidArgumentError("status", "must be SCHEDULED, QUEUED, STARTED, FINISHED, FAILED or CANCELED");
    const [first, start] = (parseToken(pageToken, /^(\d):(\d{1,9})$/, 2) ?? "0:0").split(":").map(Number) as [number, number];
    if (first >= indexes.length) throw new InvalidArgumentError("page_token", "is not a token of this listing");
    const tasks: Task[] = [];
    let index = first;
    let offset = start;
    while (tasks.length < size && index < indexes.length) {
      const want = size - tasks.length;
      const ids = await this.store.queries.taskIds(handler, indexes[index]!, offset, want);
      tasks.push(...(await this.store.getTasks(ids)).filter((t) => t.status === status));
      offset += ids.length;
      if (ids.length < want) {
        index++;
        offset = 0;
      }
    }
    return { tasks, nextPageToken: index < indexes.length ? `${index}:${offset}` : "" };
  }

  /**
   * Delete a handler's tasks in one state: QUEUED (its queue and the retries waiting) or an ended
   * state (found by a full SCAN). Running tasks are refused: cancel them. Returns how many.
   */
  async empty(handler: string, status: string, grant: Grant): Promise<number> {
    checkHandlerName(handler);
    checkGrant(grant, handler);
    if (status !== "queued" && status !== "scheduled" && !TERMINAL_STATUSES.has(status as TaskStatus)) {
      throw new InvalidArgumentError(
        "status",
        "must be QUEUED, SCHEDULED, FINISHED, FAILED or CANCELED (cancel running tasks one by one)",
      );
    }
    let deleted = 0;
    let token = "";
    for (;;) {
      const page = await this.tasks(handler, status, MAX_PAGE, token, grant);
      const done = await Promise.all(page.tasks.map((task) => this.store.deleteTask(task)));
      deleted += done.filter(Boolean).length;
      if (status === "queued" || status === "scheduled") {
        if (done.some(Boolean)) {
          token = ""; // the lists shifted: read them again from their heads
          continue;
        }
        if (page.nextPageToken === "") break;
        token = page.nextPageToken; // nothing here to delete (retries wait in the scheduled set too): go on
      } else {
        if (page.nextPageToken === "") break;
        // Resume the SCAN step this page stopped in from its start: the deleted tasks are gone from it.
        token = page.nextPageToken.replace(/:\d+$/, ":0");
      }
    }
    return deleted;
  }
}

function parseToken(token: string, re: RegExp, group = 1): string | undefined {
  if (token === "") return undefined;
  const m = re.exec(token);
  if (!m)
    throw new InvalidArgumentError("page_token", "is not a token of this listing (pass the previous page's next_page_token)");
  return group === 2 ? `${m[1]}:${m[2]}` : m[1];
}
