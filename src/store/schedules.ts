/**
 * Schedules in Redis: each one a hash under the `{sched}` hash tag (keys.ts), the set of their ids,
 * the sorted set of their next ticks the schedulers sleep on, and the channel that tells them of a
 * change. Every write is one script in that one slot; a tick's task is created in its handler's
 * slot by the engine (create.ts), then recorded here (schedule-advance.lua).
 *
 * Hash fields (strings; times in epoch ms, "" for unset): handler, params (JSON), options (JSON of
 * TaskOptions), cron, time_zone, every_ms, start_at_ms, end_at_ms, skip_missed ("1"/"0"), paused
 * ("1"/"0"), next_run_ms, last_run_ms, last_task_id, last_error, created_ms, updated_ms, and gen: a
 * random token renewed by every write of the definition or state, which makes those writes and
 * the advance after a tick compare-and-set, and names the definition in each tick's idempotency key.
 */
import { randomBytes } from "node:crypto";
import { isObject, type JsonObject, type TaskOptions } from "../core/domain.js";
import type { Schedule, ScheduleDefinition } from "../core/schedule.js";
import type { Connection } from "./connection.js";
import * as keys from "./keys.js";
import { CODES } from "./scripts.js";

/** A schedule as stored, with what a compare-and-set needs. */
export interface ScheduleRecord {
  schedule: Schedule;
  /** The token of the definition and state read (see the file's comment). */
  gen: string;
}

/** What a write of a schedule did (schedule-save.lua). */
export type SaveResult = "saved" | "exists" | "not_found" | "conflict";
const SAVE_RESULTS = {
  [CODES["schedule-save"].SAVED]: "saved",
  [CODES["schedule-save"].EXISTS]: "exists",
  [CODES["schedule-save"].NOT_FOUND]: "not_found",
  [CODES["schedule-save"].CONFLICT]: "conflict",
} as Record<number, SaveResult>;

/** What recording a tick did (schedule-advance.lua). */
export type AdvanceResult = "advanced" | "stale" | "not_found";
const ADVANCE_RESULTS = {
  [CODES["schedule-advance"].ADVANCED]: "advanced",
  [CODES["schedule-advance"].STALE]: "stale",
  [CODES["schedule-advance"].NOT_FOUND]: "not_found",
} as Record<number, AdvanceResult>;

/** What a scheduler wakes up to (schedule-due.lua). */
export interface DueSchedules {
  /** Now by Redis's clock, epoch ms. */
  nowMs: number;
  /** The earliest tick after now, or undefined when no schedule has one. */
  nextMs: number | undefined;
  /** Schedules whose next tick has come. */
  due: ScheduleRecord[];
}

/** The state a write sets with a definition: paused, the next tick, and when. */
export interface ScheduleState {
  paused: boolean;
  nextRunMs: number | undefined;
  updatedMs: number;
}

const msText = (ms: number | undefined): string => (ms === undefined ? "" : String(Math.round(ms)));

/** A definition as hash fields (every one written, "" for unset, so a write replaces the last). */
function definitionFields(def: ScheduleDefinition): Record<string, string> {
  return {
    handler: def.handler,
    params: def.paramsJson,
    options: JSON.stringify(def.options),
    cron: def.cron ?? "",
    time_zone: def.cron === undefined ? "" : def.timeZone,
    every_ms: msText(def.everyMs),
    start_at_ms: msText(def.startAtMs),
    end_at_ms: msText(def.endAtMs),
    skip_missed: def.skipMissed ? "1" : "0",
  };
}

function stateFields(state: ScheduleState): Record<string, string> {
  return {
    paused: state.paused ? "1" : "0",
    next_run_ms: state.paused ? "" : msText(state.nextRunMs),
    updated_ms: msText(state.updatedMs),
    gen: randomBytes(8).toString("hex"),
  };
}

function optionalMs(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

function parseObject(text: string | undefined): JsonObject {
  try {
    const value: unknown = JSON.parse(text ?? "{}");
    return isObject(value) ? value : {};
  } catch {
    return {};
  }
}

/** Decode a schedule hash; fields that are missing or odd read as unset. */
export function decodeSchedule(id: string, f: Record<string, string>): ScheduleRecord {
  const schedule: Schedule = {
    id,
    handler: f.handler ?? "",
    paramsJson: f.params ?? "{}",
    params: parseObject(f.params),
    options: parseObject(f.options) as TaskOptions,
    timeZone: f.time_zone || "UTC",
    skipMissed: f.skip_missed === "1",
    paused: f.paused === "1",
    createdMs: optionalMs(f.created_ms) ?? 0,
    updatedMs: optionalMs(f.updated_ms) ?? 0,
  };
  if (f.cron) schedule.cron = f.cron;
  const optional = {
    everyMs: optionalMs(f.every_ms),
    startAtMs: optionalMs(f.start_at_ms),
    endAtMs: optionalMs(f.end_at_ms),
    nextRunMs: optionalMs(f.next_run_ms),
    lastRunMs: optionalMs(f.last_run_ms),
  };
  for (const [name, value] of Object.entries(optional)) if (value !== undefined) schedule[name as keyof typeof optional] = value;
  if (f.last_task_id) schedule.lastTaskId = f.last_task_id;
  if (f.last_error) schedule.lastError = f.last_error;
  return { schedule, gen: f.gen ?? "" };
}

function pairsToRecord(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) out[pairs[i]!] = pairs[i + 1]!;
  return out;
}

const SAVE_KEYS = [keys.SCHEDULES_KEY, keys.SCHEDULES_DUE_KEY];

export class ScheduleStore {
  constructor(private readonly connection: Connection) {}

  private script<T>(name: Parameters<Connection["script"]>[0], scriptKeys: string[], args: string[]): Promise<T> {
    return this.connection.call(() => this.connection.script<T>(name, scriptKeys, args));
  }

  /** Create a schedule (its id must be free), with its state; `createdMs` anchors `every` ticks. */
  async create(def: ScheduleDefinition, state: ScheduleState, createdMs: number): Promise<SaveResult> {
    const fields = {
      ...definitionFields(def),
      ...stateFields(state),
      created_ms: msText(createdMs),
      last_run_ms: "",
      last_task_id: "",
      last_error: "",
    };
    return this.save(def.id, "", fields);
  }

  /** Replace a schedule's definition and state, unless another write came since `gen` was read. */
  update(def: ScheduleDefinition, state: ScheduleState, gen: string): Promise<SaveResult> {
    return this.save(def.id, gen, { ...definitionFields(def), ...stateFields(state) });
  }

  /** Set a schedule's state (pause, resume), unless another write came since `gen` was read. */
  setState(id: string, state: ScheduleState, gen: string): Promise<SaveResult> {
    return this.save(id, gen, stateFields(state));
  }

  private async save(id: string, gen: string, fields: Record<string, string>): Promise<SaveResult> {
    const code = await this.script<number>(
      "schedule-save",
      [keys.scheduleKey(id), ...SAVE_KEYS],
      [id, gen, keys.SCHEDULE_CHANNEL, JSON.stringify(fields)],
    );
    return SAVE_RESULTS[code] ?? "conflict";
  }

  /** Read one schedule; undefined when there is none. */
  async read(id: string): Promise<ScheduleRecord | undefined> {
    const fields = await this.connection.call(() => this.connection.redis.hgetall(keys.scheduleKey(id)));
    return Object.keys(fields).length === 0 ? undefined : decodeSchedule(id, fields);
  }

  /** Every schedule, by id. (All live in one slot: one round trip on a cluster too.) */
  async list(): Promise<ScheduleRecord[]> {
    const ids = (await this.connection.call(() => this.connection.redis.smembers(keys.SCHEDULES_KEY))).sort();
    if (ids.length === 0) return [];
    const replies = await this.connection.call(() => {
      const pipeline = this.connection.redis.pipeline();
      for (const id of ids) pipeline.hgetall(keys.scheduleKey(id));
      return pipeline.exec();
    });
    return ids.flatMap((id, i) => {
      const [err, fields] = replies?.[i] ?? [null, {}];
      if (err) throw this.connection.failure(err);
      const record = fields as Record<string, string>;
      return Object.keys(record).length === 0 ? [] : [decodeSchedule(id, record)];
    });
  }

  /** Delete a schedule; false when there was none. */
  async remove(id: string): Promise<boolean> {
    const code = await this.script<number>("schedule-delete", [keys.scheduleKey(id), ...SAVE_KEYS], [id, keys.SCHEDULE_CHANNEL]);
    return code === CODES["schedule-delete"].DELETED;
  }

  /** Redis's time, up to `limit` schedules whose tick has come, and the next tick after them. */
  async due(limit: number): Promise<DueSchedules> {
    const reply = await this.script<Array<number | string | string[]>>(
      "schedule-due",
      [keys.SCHEDULES_DUE_KEY],
      [keys.SCHEDULE_KEY_PREFIX, String(limit)],
    );
    const nowMs = Number(reply[0]);
    const next = Number(reply[1]);
    const due: ScheduleRecord[] = [];
    for (let i = 2; i + 1 < reply.length; i += 2) {
      due.push(decodeSchedule(String(reply[i]), pairsToRecord(reply[i + 1] as string[])));
    }
    return { nowMs, nextMs: next >= 0 ? next : undefined, due };
  }

  /**
   * Record a tick: its task (or the error that kept it from having one) and, if the schedule still
   * waits on that tick of the definition read (`record`), its next tick (see schedule-advance.lua).
   */
  async advance(
    record: ScheduleRecord,
    tickMs: number,
    nextMs: number | undefined,
    taskId: string,
    error: string,
  ): Promise<AdvanceResult> {
    const { schedule, gen } = record;
    const code = await this.script<number>(
      "schedule-advance",
      [keys.scheduleKey(schedule.id), keys.SCHEDULES_DUE_KEY],
      [schedule.id, msText(schedule.createdMs), gen, msText(tickMs), msText(nextMs), taskId, error],
    );
    return ADVANCE_RESULTS[code] ?? "stale";
  }

  /** Hear of every change of a schedule (its id); resolves once subscribed. */
  subscribe(listener: (scheduleId: string) => void): Promise<() => void> {
    return this.connection.call(() => this.connection.subscriptions.subscribe(keys.SCHEDULE_CHANNEL, listener));
  }
}
