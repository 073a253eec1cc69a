/**
 * `baichuan.v1.AdminService`: the engine's admin operations (engine/admin.ts) over RPC.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type AdminService, type QueueInfo, QueueInfoSchema, WorkerInfoSchema } from "../../gen/baichuan/v1/admin_pb.js";
import type { Authenticator, Grant } from "../core/auth.js";
import type { QueueStats } from "../engine/admin.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { duration, statusFromMessage, taskToMessage, timestamp } from "./convert.js";

export function adminServiceImpl(bc: BaiChuan, auth: Authenticator): ServiceImpl<typeof AdminService> {
  const admin = bc.admin;
  const grantOf = (ctx: HandlerContext) => auth.authenticate(ctx.requestHeader.get("authorization"));
  const withGrant =
    <Req, Res>(fn: (req: Req, grant: Grant) => Promise<Res>) =>
    (req: Req, ctx: HandlerContext): Promise<Res> =>
      fn(req, grantOf(ctx));
  return {
    listQueues: withGrant(async (_req, grant) => ({
      queues: (await admin.queues(grant)).map(queueInfo),
    })),
    listWorkers: withGrant(async (_req, grant) => ({
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
    listTasks: withGrant(async (req, grant) => {
      const page = await admin.tasks(req.handler, statusFromMessage(req.status), req.pageSize, req.pageToken, grant);
      return { tasks: page.tasks.map(taskToMessage), nextPageToken: page.nextPageToken };
    }),
    emptyQueue: withGrant(async (req, grant) => ({
      deleted: BigInt(await admin.empty(req.handler, statusFromMessage(req.status), grant)),
    })),
    setQueueLimits: withGrant(async (req, grant) => {
      // Absent limits are no limits: the request replaces every one.
      const { ratePerSecond = 0, burst = 0, maxRunning = 0, maxRunningPerKey = 0 } = req.limits ?? {};
      const limits = { ratePerSecond, burst, maxRunning, maxRunningPerKey };
      return { queue: queueInfo(await admin.setLimits(req.handler, limits, grant)) };
    }),
    pauseQueue: withGrant(async (req, grant) => ({ queue: queueInfo(await admin.setPaused(req.handler, true, grant)) })),
    resumeQueue: withGrant(async (req, grant) => ({ queue: queueInfo(await admin.setPaused(req.handler, false, grant)) })),
    // Issue 12 (per-minute series): being built.
    getQueueSeries: notYet,
  };
}

function queueInfo(q: QueueStats): QueueInfo {
  return create(QueueInfoSchema, {
    handler: q.handler,
    queued: BigInt(q.queued),
    started: BigInt(q.started),
    scheduled: BigInt(q.scheduled),
    ...(q.oldestQueuedAgeMs === undefined ? {} : { oldestQueuedAge: duration(q.oldestQueuedAgeMs / 1000) }),
    finishedTotal: BigInt(q.finished),
    failedTotal: BigInt(q.failed),
    retriedTotal: BigInt(q.retried),
    canceledTotal: BigInt(q.canceled),
    ratePerSecond: q.limits.ratePerSecond,
    burst: q.limits.burst,
    maxRunning: q.limits.maxRunning,
    maxRunningPerKey: q.limits.maxRunningPerKey,
    paused: q.paused,
    held: BigInt(q.held),
    queuedInGroups: BigInt(q.queuedInGroups),
    groups: BigInt(q.groups),
  });
}

function notYet(): never {
  throw new ConnectError("not implemented yet", Code.Unimplemented);
}
