/**
 * `baichuan.v1.AdminService`: the engine's admin operations (engine/admin.ts) over RPC.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type AdminService,
  type QueueInfo,
  QueueInfoSchema,
  QueuePointSchema,
  WorkerInfoSchema,
} from "../../gen/baichuan/v1/admin_pb.js";
import type { Authenticator } from "../core/auth.js";
import type { QueueStats } from "../engine/admin.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { duration, statusFromMessage, taskToMessage, timestamp } from "./convert.js";
import { withGrantOf } from "./grant.js";

export function adminServiceImpl(bc: BaiChuan, auth: Authenticator): ServiceImpl<typeof AdminService> {
  const admin = bc.admin;
  const withGrant = withGrantOf(auth);
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
    getQueueSeries: withGrant(async (req, grant) => ({
      points: (await admin.series(req.handler, req.minutes, grant)).map((p) =>
        create(QueuePointSchema, {
          minute: timestampFromMs(p.minuteMs),
          finished: BigInt(p.finished),
          failed: BigInt(p.failed),
          ...(p.p50 === undefined ? {} : { runTimeP50: duration(p.p50) }),
          ...(p.p95 === undefined ? {} : { runTimeP95: duration(p.p95) }),
          ...(p.p99 === undefined ? {} : { runTimeP99: duration(p.p99) }),
        }),
      ),
    })),
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
