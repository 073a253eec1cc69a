/**
 * Managing schedules (served as `baichuan.v1.ScheduleService` by api/schedule-service.ts, and as
 * `bc.schedules` in the library): create, read, list, update, pause, resume and delete, each
 * checked first (core/schedule.ts) so bad input changes nothing. The scheduler (scheduler.ts)
 * creates their tasks.
 *
 * Tokens: a token must cover a schedule's handler to create, read or change it; one limited to
 * some handlers is told of a schedule of another handler what it is told of no schedule at all
 * (NOT_FOUND; DeleteSchedule answers false), as for tasks, and lists only the schedules it covers.
 */
import { randomInt } from "node:crypto";
import { checkGrant, type Grant } from "../core/auth.js";
import { InvalidArgumentError, ScheduleExistsError, ScheduleNotFoundError } from "../core/errors.js";
import {
  checkScheduleId,
  checkScheduleSpec,
  nextTick,
  type Schedule,
  type ScheduleDefinition,
  type ScheduleSpec,
} from "../core/schedule.js";
import type { Limits } from "../core/validate.js";
import type { SaveResult, ScheduleRecord, ScheduleState, Store } from "../store/store.js";

/** Tries of a change that met another write between its read and its write. */
const MAX_WRITE_TRIES = 10;

export class Schedules {
  constructor(
    private readonly store: Store,
    private readonly limits: Limits,
  ) {}

  /**
   * Create a schedule under its id (ScheduleExistsError when taken). Its first tick is the first
   * after now (by Redis's clock); `every` ticks count from start_at, or from now.
   */
  async create(spec: ScheduleSpec, grant?: Grant): Promise<Schedule> {
    const def = checkScheduleSpec(spec, this.limits);
    if (grant) checkGrant(grant, def.handler);
    const now = await this.store.timeMs();
    checkNotEnded(def, now);
    const paused = spec.paused === true;
    const state = { paused, nextRunMs: paused ? undefined : nextTick(def, now, now), updatedMs: now };
    if ((await this.store.schedules.create(def, state, now)) === "exists") throw new ScheduleExistsError(def.id);
    return this.get(def.id, grant);
  }

  /** Read a schedule with its next tick and last task (ScheduleNotFoundError when none, or not `grant`'s). */
  async get(id: string, grant?: Grant): Promise<Schedule> {
    const record = await this.read(checkScheduleId(id), grant);
    return (await this.withLastStatus([record.schedule]))[0]!;
  }

  /** Every schedule `grant` covers, by id. */
  async list(grant?: Grant): Promise<Schedule[]> {
    const records = await this.store.schedules.list();
    return this.withLastStatus(records.map((r) => r.schedule).filter((s) => !grant || grant.allows(s.handler)));
  }

  /**
   * Replace a schedule's definition, keeping its id, state (paused or not), creation time and last
   * run; its next tick is computed again from now.
   */
  async update(spec: ScheduleSpec, grant?: Grant): Promise<Schedule> {
    const def = checkScheduleSpec(spec, this.limits);
    if (grant) checkGrant(grant, def.handler);
    return this.change(def.id, grant, (current, now) => {
      checkNotEnded(def, now);
      return {
        def,
        state: {
          paused: current.schedule.paused,
          nextRunMs: current.schedule.paused ? undefined : nextTick(def, current.schedule.createdMs, now),
          updatedMs: now,
        },
      };
    });
  }

  /** Stop a schedule's ticks until resumed (idempotent). */
  pause(id: string, grant?: Grant): Promise<Schedule> {
    return this.change(checkScheduleId(id), grant, (current, now) =>
      current.schedule.paused ? undefined : { state: { paused: true, nextRunMs: undefined, updatedMs: now } },
    );
  }

  /** Let a paused schedule tick again, from its first tick after now (idempotent). */
  resume(id: string, grant?: Grant): Promise<Schedule> {
    return this.change(checkScheduleId(id), grant, ({ schedule }, now) =>
      schedule.paused
        ? { state: { paused: false, nextRunMs: nextTick(schedule, schedule.createdMs, now), updatedMs: now } }
        : undefined,
    );
  }

  /** Delete a schedule (its tasks are kept). False when there was none, or none `grant` may see. */
  async delete(id: string, grant?: Grant): Promise<boolean> {
    const scheduleId = checkScheduleId(id);
    if (grant?.limited) {
      const record = await this.store.schedules.read(scheduleId);
      if (!record || !grant.allows(record.schedule.handler)) return false;
    }
    return this.store.schedules.remove(scheduleId);
  }

  /** A schedule `grant` may see, or ScheduleNotFoundError. */
  private async read(id: string, grant: Grant | undefined): Promise<ScheduleRecord> {
    const record = await this.store.schedules.read(id);
    if (!record || (grant && !grant.allows(record.schedule.handler)))
      throw new ScheduleNotFoundError(id, grant?.limited === true);
    return record;
  }

  /**
   * Read, compute the write from what was read (undefined: nothing to change), write it if no
   * other write came between (compare-and-set on `gen`), and try again from the read if one did.
   */
  private async change(
    id: string,
    grant: Grant | undefined,
    compute: (
      current: ScheduleRecord,
      nowMs: number,
    ) => { def?: Parameters<Store["schedules"]["update"]>[0]; state: ScheduleState } | undefined,
  ): Promise<Schedule> {
    for (let attempt = 1; ; attempt++) {
      const [current, now] = await Promise.all([this.read(id, grant), this.store.timeMs()]);
      const write = compute(current, now);
      if (!write) return (await this.withLastStatus([current.schedule]))[0]!;
      const result: SaveResult = write.def
        ? await this.store.schedules.update(write.def, write.state, current.gen)
        : await this.store.schedules.setState(id, write.state, current.gen);
      if (result === "saved") return this.get(id, grant);
      if (result === "not_found") throw new ScheduleNotFoundError(id, grant?.limited === true);
      if (attempt >= MAX_WRITE_TRIES) throw new Error(`schedule ${id}: ${MAX_WRITE_TRIES} writes met another write`);
      await new Promise((resolve) => setTimeout(resolve, randomInt(5, 50)));
    }
  }

  /** The schedules with the status their last task has now (none once it expired). */
  private async withLastStatus(schedules: Schedule[]): Promise<Schedule[]> {
    const ids = schedules.flatMap((s) => (s.lastTaskId ? [s.lastTaskId] : []));
    if (ids.length === 0) return schedules;
    const status = new Map((await this.store.getTasks(ids)).map((t) => [t.id, t.status]));
    return schedules.map((s) => {
      const last = s.lastTaskId === undefined ? undefined : status.get(s.lastTaskId);
      return last === undefined ? s : { ...s, lastTaskStatus: last };
    });
  }
}

/** A schedule whose end_at has passed would never run: refused, so a mistake is noticed. */
function checkNotEnded(def: ScheduleDefinition, nowMs: number): void {
  if (def.endAtMs !== undefined && def.endAtMs <= nowMs) {
    throw new InvalidArgumentError("end_at", "has passed: the schedule would never run");
  }
}
