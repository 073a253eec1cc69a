/**
 * Operations for the people who run BaiChuan: queues with their counts, live workers, a handler's
 * tasks by state a page at a time, and emptying a queue by state. Served as `baichuan.v1.AdminService`
 * (below) and as the original's admin URLs (legacy.ts). A token with handler patterns sees only the
 * handlers it covers.
 */
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { type AdminService, QueueInfoSchema, WorkerInfoSchema } from "../../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../../gen/baichuan/v1/task_pb.js";
import { type Authenticator, checkGrant, type Grant } from "../core/auth.js";
import { microsFromIso, type Task } from "../core/domain.js";
import { InvalidArgumentError, toConnectError } from "../core/errors.js";
import { checkHandlerName } from "../core/validate.js";
import type { BaiChuan } from "../engine/baichuan.js";
import type { QueueStats } from "../store/store.js";
import { duration, taskToMessage, timestamp } from "./task-service.js";

const DEFAULT_PAGE = 50;
const MAX_PAGE = 1000;

/** Where a listing of a live state reads, in order: QUEUED is the queue, then the waiting retries. */
const INDEXES = {
  queued: ["queue:high", "queue", "queue:low", "scheduled"],
  scheduled: ["scheduled"],
  started: ["running"],
} as const;
const ENDED: ReadonlySet<string> = new Set(["finished", "failed", "canceled"]);

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
  constructor(private readonly bc: BaiChuan) {}

  /** Every handler with a queue that `grant` covers, by name, with its counts. */
  async queues(grant: Grant): Promise<QueueStats[]> {
    const handlers = (await this.bc.store.queuedHandlers()).filter((h) => grant.allows(h)).sort();
    return this.bc.store.queueStats(handlers);
  }

  /** Live workers, by name, with the handlers `grant` covers (workers with none are left out). */
  async workers(grant: Grant): Promise<WorkerView[]> {
    const [workers, now] = await Promise.all([this.bc.store.workers(), this.bc.store.timeMs()]); // last_heartbeat is by Redis's clock
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
    if (ENDED.has(status)) {
      const [cursor, skip] = (parseToken(pageToken, /^x:(\d{1,20}):(\d{1,4})$/, 2) ?? "0:0").split(":") as [string, string];
      const page = await this.bc.store.scanTasks(handler, status, { cursor, skip: Number(skip) }, size);
      return { tasks: page.tasks, nextPageToken: page.next ? `x:${page.next.cursor}:${page.next.skip}` : "" };
    }
    const indexes = INDEXES[status as keyof typeof INDEXES];
    if (!indexes) throw new InvalidArgumentError("status", "must be SCHEDULED, QUEUED, STARTED, FINISHED, FAILED or CANCELED");
    const [first, start] = (parseToken(pageToken, /^(\d):(\d{1,9})$/, 2) ?? "0:0").split(":").map(Number) as [number, number];
    if (first >= indexes.length) throw new InvalidArgumentError("page_token", "is not a token of this listing");
    const tasks: Task[] = [];
    let index = first;
    let offset = start;
    while (tasks.length < size && index < indexes.length) {
      const want = size - tasks.length;
      const ids = await this.bc.store.taskIds(handler, indexes[index]!, offset, want);
      tasks.push(...(await this.bc.store.getTasks(ids)).filter((t) => t.status === status));
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
    if (status !== "queued" && status !== "scheduled" && !ENDED.has(status)) {
      throw new InvalidArgumentError(
        "status",
        "must be QUEUED, SCHEDULED, FINISHED, FAILED or CANCELED (cancel running tasks one by one)",
      );
    }
    let deleted = 0;
    let token = "";
    for (;;) {
      const page = await this.tasks(handler, status, MAX_PAGE, token, grant);
      const done = await Promise.all(page.tasks.map((task) => this.bc.store.deleteTask(task)));
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

const STATUS_NAMES: Partial<Record<TaskStatus, string>> = {
  [TaskStatus.SCHEDULED]: "scheduled",
  [TaskStatus.QUEUED]: "queued",
  [TaskStatus.STARTED]: "started",
  [TaskStatus.FINISHED]: "finished",
  [TaskStatus.FAILED]: "failed",
  [TaskStatus.CANCELED]: "canceled",
};

function statusName(status: TaskStatus): string {
  const name = STATUS_NAMES[status];
  if (!name) throw new InvalidArgumentError("status", "must be set: SCHEDULED, QUEUED, STARTED, FINISHED, FAILED or CANCELED");
  return name;
}

export function adminServiceImpl(bc: BaiChuan, auth: Authenticator): ServiceImpl<typeof AdminService> {
  const admin = new Admin(bc);
  const grantOf = (ctx: HandlerContext) => auth.authenticate(ctx.requestHeader.get("authorization"));
  const guard =
    <Req, Res>(fn: (req: Req, grant: Grant) => Promise<Res>) =>
    async (req: Req, ctx: HandlerContext): Promise<Res> => {
      try {
        return await fn(req, grantOf(ctx));
      } catch (err) {
        throw toConnectError(err);
      }
    };
  return {
    listQueues: guard(async (_req, grant) => ({
      queues: (await admin.queues(grant)).map((q) =>
        create(QueueInfoSchema, {
          handler: q.handler,
          queued: BigInt(q.queued),
          started: BigInt(q.started),
          scheduled: BigInt(q.scheduled),
          ...(q.oldestQueuedAgeMs === undefined ? {} : { oldestQueuedAge: duration(q.oldestQueuedAgeMs / 1000) }),
          finishedTotal: BigInt(q.finished),
          failedTotal: BigInt(q.failed),
          retriedTotal: BigInt(q.retried),
          canceledTotal: BigInt(q.canceled),
        }),
      ),
    })),
    listWorkers: guard(async (_req, grant) => ({
      workers: (await admin.workers(grant)).map((w) => {
        const started = timestamp(w.startedAt);
        return create(WorkerInfoSchema, {
          name: w.name,
          hostname: w.hostname,
          pid: w.pid,
          handlers: w.handlers,
          state: w.state,
          ...(started ? { startedAt: started } : {}),
          ...(w.heartbeatAgeMs === undefined ? {} : { heartbeatAge: duration(w.heartbeatAgeMs / 1000) }),
          finishedTotal: BigInt(w.finished),
          failedTotal: BigInt(w.failed),
          busyTime: duration(w.busySeconds),
        });
      }),
    })),
    listTasks: guard(async (req, grant) => {
      const page = await admin.tasks(req.handler, statusName(req.status), req.pageSize, req.pageToken, grant);
      return { tasks: page.tasks.map(taskToMessage), nextPageToken: page.nextPageToken };
    }),
    emptyQueue: guard(async (req, grant) => ({
      deleted: BigInt(await admin.empty(req.handler, statusName(req.status), grant)),
    })),
  };
}
