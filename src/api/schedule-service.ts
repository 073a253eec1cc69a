/**
 * `baichuan.v1.ScheduleService`: recurring tasks (engine/schedules.ts) over RPC. Each method takes
 * the caller's grant from its token (as AdminService does), calls one operation and maps the result.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import type { ScheduleService } from "../../gen/baichuan/v1/schedule_pb.js";
import type { Authenticator } from "../core/auth.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { scheduleSpecFromMessage, scheduleToMessage } from "./convert.js";
import { withGrantOf } from "./grant.js";

export function scheduleServiceImpl(bc: BaiChuan, auth: Authenticator): ServiceImpl<typeof ScheduleService> {
  const schedules = bc.schedules;
  const withGrant = withGrantOf(auth);
  return {
    createSchedule: withGrant(async (req, grant) => ({
      schedule: scheduleToMessage(await schedules.create(scheduleSpecFromMessage(req.schedule), grant)),
    })),
    getSchedule: withGrant(async (req, grant) => ({ schedule: scheduleToMessage(await schedules.get(req.scheduleId, grant)) })),
    listSchedules: withGrant(async (_req, grant) => ({ schedules: (await schedules.list(grant)).map(scheduleToMessage) })),
    updateSchedule: withGrant(async (req, grant) => ({
      schedule: scheduleToMessage(await schedules.update(scheduleSpecFromMessage(req.schedule), grant)),
    })),
    pauseSchedule: withGrant(async (req, grant) => ({
      schedule: scheduleToMessage(await schedules.pause(req.scheduleId, grant)),
    })),
    resumeSchedule: withGrant(async (req, grant) => ({
      schedule: scheduleToMessage(await schedules.resume(req.scheduleId, grant)),
    })),
    deleteSchedule: withGrant(async (req, grant) => ({ deleted: await schedules.delete(req.scheduleId, grant) })),
  };
}
