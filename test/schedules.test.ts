/**
 * ScheduleService through the real listener, against a real redis-server, with the scheduler in
 * the service's process: ticks create tasks that carry the schedule's id, every kind of bad input
 * is refused with INVALID_ARGUMENT and changes nothing, pause / resume / update / delete / end_at,
 * cron in a time zone, and tokens that see only some handlers. (Several processes, restarts and
 * missed ticks: schedules-processes.test.ts; a Redis Cluster: cluster.test.ts.)
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Schedule, type ScheduleSchema, ScheduleService } from "../gen/baichuan/v1/schedule_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import type { Task } from "../src/core/domain.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import * as keys from "../src/store/keys.js";
import { startRedis } from "./support/redis.js";
import { eventually, failureOf, startService, type TestService } from "./support/service.js";
import { msFromIso, sleep } from "./support/time.js";

const ROOT = "root-token-0123456789";
const NARROW = "narrow-token-0123456789";
const ALL = { allows: () => true };

let svc: TestService;
const client = (token = ROOT) =>
  createClient(
    ScheduleService,
    createConnectTransport({
      baseUrl: svc.baseUrl,
      httpVersion: "1.1",
      interceptors: [
        (next) => (req) => {
          if (token) req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ],
    }),
  );

beforeAll(async () => {
  svc = await startService({
    scheduler: true,
    limits: { maxParamsBytes: 4096 },
    authTokens: [ROOT, `${NARROW}=/sched_narrow/*`],
  });
});
afterAll(async () => {
  await svc?.close();
});

type ScheduleInit = MessageInitShape<typeof ScheduleSchema>;

/** The tasks a schedule created, oldest tick first (its handler has no worker here: they stay queued). */
async function tasksOf(handler: string, scheduleId: string): Promise<Task[]> {
  const { tasks } = await svc.bc.admin.tasks(handler, "queued", 1000, "", ALL);
  return tasks.filter((t) => t.scheduleId === scheduleId).sort((a, b) => msFromIso(a.scheduleTick) - msFromIso(b.scheduleTick));
}

const ms = (s: Schedule, field: "nextRunAt" | "lastRunAt" | "createdAt" | "updatedAt") =>
  s[field] ? timestampMs(s[field]!) : undefined;

describe("ticks", () => {
  it("creates one task per tick, aligned on the creation time, carrying the schedule's id", async () => {
    const handler = "/sched_test/every";
    const { schedule } = await client().createSchedule({
      schedule: { scheduleId: "every-1s", handler, params: { n: 1 }, every: durationFromMs(1000) },
    });
    const created = ms(schedule!, "createdAt")!;
    expect(ms(schedule!, "nextRunAt")).toBe(created + 1000);
    expect(schedule!.lastTaskId).toBe("");
    const tasks = await eventually(async () => {
      const found = await tasksOf(handler, "every-1s");
      return found.length >= 2 ? found : undefined;
    });
    expect(tasks.map((t) => msFromIso(t.scheduleTick))).toEqual([created + 1000, created + 2000]);
    expect(tasks[0]!.params).toEqual({ n: 1 });

    // Task.schedule_id in GetTask, schedule_id in the legacy task_get.
    const legacy = await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${tasks[0]!.id}`, {
      headers: { authorization: `Bearer ${ROOT}` },
    });
    expect(((await legacy.json()) as { task_info: Record<string, string> }).task_info.schedule_id).toBe("every-1s");
    const task = await svc.clients["connect-h1"].getTask(
      { taskId: tasks[0]!.id },
      { headers: { authorization: `Bearer ${ROOT}` } },
    );
    expect(task.task?.scheduleId).toBe("every-1s");

    const got = (await client().getSchedule({ scheduleId: "every-1s" })).schedule!;
    expect(ms(got, "lastRunAt")).toBeGreaterThanOrEqual(created + 2000);
    expect(got.lastTaskId).toMatch(/^[0-9A-F]{20}$/);
    expect(got.lastTaskStatus).toBe(TaskStatus.QUEUED);
    await client().deleteSchedule({ scheduleId: "every-1s" });
  });

  it("shows the last task's status as it is now (a handler that runs)", async () => {
    await client().createSchedule({ schedule: { scheduleId: "ping", handler: "/demo_api/ping", every: durationFromMs(1000) } });
    await eventually(
      async () => (await client().getSchedule({ scheduleId: "ping" })).schedule!.lastTaskStatus === TaskStatus.FINISHED,
    );
    await client().deleteSchedule({ scheduleId: "ping" });
  });

  it("runs a cron expression in its time zone (6 fields: every second), and says when a daily one next runs there", async () => {
    const handler = "/sched_test/cron";
    const { schedule } = await client().createSchedule({
      schedule: { scheduleId: "cron-s", handler, cron: "* * * * * *", timeZone: "Asia/Kolkata" },
    });
    expect(schedule!.timeZone).toBe("Asia/Kolkata");
    const [first] = await eventually(async () => {
      const found = await tasksOf(handler, "cron-s");
      return found.length >= 1 ? found : undefined;
    });
    expect(msFromIso(first!.scheduleTick) % 1000).toBe(0);
    await client().deleteSchedule({ scheduleId: "cron-s" });

    const daily = (
      await client().createSchedule({
        schedule: { scheduleId: "daily", handler, cron: "30 2 * * *", timeZone: "Europe/Berlin", paused: true },
      })
    ).schedule!;
    expect(daily.paused).toBe(true);
    expect(daily.nextRunAt).toBeUndefined();
    const resumed = (await client().resumeSchedule({ scheduleId: "daily" })).schedule!;
    const local = new Intl.DateTimeFormat("en-GB", {
      timeZone: "Europe/Berlin",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    }).format(timestampDate(resumed.nextRunAt!));
    // 02:30 in Berlin, or 03:00 on the day 02:30 does not exist.
    expect(["02:30", "03:00"]).toContain(local);
    expect(ms(resumed, "nextRunAt")! - Date.now()).toBeLessThanOrEqual(25 * 3600_000);
    await client().deleteSchedule({ scheduleId: "daily" });
  });

  it("stops at end_at: ticks from start_at to end_at, then no next run", async () => {
    const handler = "/sched_test/end";
    const start = Math.ceil((Date.now() + 1500) / 1000) * 1000;
    await client().createSchedule({
      schedule: {
        scheduleId: "bounded",
        handler,
        every: durationFromMs(1000),
        startAt: timestampFromMs(start),
        endAt: timestampFromMs(start + 2000),
      },
    });
    const done = await eventually(async () => {
      const s = (await client().getSchedule({ scheduleId: "bounded" })).schedule!;
      return ms(s, "lastRunAt") === start + 2000 ? s : undefined;
    });
    expect(done.nextRunAt).toBeUndefined();
    const tasks = await tasksOf(handler, "bounded");
    expect(tasks.map((t) => msFromIso(t.scheduleTick))).toEqual([start, start + 1000, start + 2000]);
    expect(await svc.redis.client.zscore(keys.SCHEDULES_DUE_KEY, "bounded")).toBeNull();
  });
});

describe("pause, resume, update, delete", () => {
  it("pause stops the ticks; resume goes on from the next tick after now", async () => {
    const handler = "/sched_test/pause";
    const created = (await client().createSchedule({ schedule: { scheduleId: "p", handler, every: durationFromMs(1000) } }))
      .schedule!;
    await eventually(async () => (await tasksOf(handler, "p")).length >= 1);
    const paused = (await client().pauseSchedule({ scheduleId: "p" })).schedule!;
    expect(paused.paused).toBe(true);
    expect(paused.nextRunAt).toBeUndefined();
    const count = (await tasksOf(handler, "p")).length;
    await sleep(2500); // a bounded look: no tick while paused
    expect(await tasksOf(handler, "p")).toHaveLength(count);
    // Pausing again changes nothing.
    const again = (await client().pauseSchedule({ scheduleId: "p" })).schedule!;
    expect(ms(again, "updatedAt")).toBe(ms(paused, "updatedAt"));

    const resumed = (await client().resumeSchedule({ scheduleId: "p" })).schedule!;
    expect(resumed.paused).toBe(false);
    const resumedAt = ms(resumed, "updatedAt")!;
    const next = ms(resumed, "nextRunAt")!;
    // Still aligned on the creation time, and the first tick after the resume.
    expect((next - ms(created, "createdAt")!) % 1000).toBe(0);
    expect(next).toBeGreaterThan(resumedAt);
    expect(next).toBeLessThanOrEqual(resumedAt + 1000);
    const tasks = await eventually(async () => {
      const found = await tasksOf(handler, "p");
      return found.length > count ? found : undefined;
    });
    expect(msFromIso(tasks[count]!.scheduleTick)).toBe(next);
    await client().deleteSchedule({ scheduleId: "p" });
  });

  it("update replaces the definition and computes the next run again from now", async () => {
    const handler = "/sched_test/update";
    const before = (
      await client().createSchedule({ schedule: { scheduleId: "u", handler, params: { v: 1 }, cron: "0 0 1 1 *" } })
    ).schedule!;
    expect(ms(before, "nextRunAt")! - Date.now()).toBeGreaterThan(0);
    const after = (
      await client().updateSchedule({ schedule: { scheduleId: "u", handler, params: { v: 2 }, every: durationFromMs(1000) } })
    ).schedule!;
    expect(after.cron).toBe("");
    expect(after.every).toEqual(durationFromMs(1000));
    expect(ms(after, "createdAt")).toBe(ms(before, "createdAt"));
    expect(ms(after, "nextRunAt")).toBeLessThanOrEqual(ms(after, "updatedAt")! + 1000);
    const [task] = await eventually(async () => {
      const found = await tasksOf(handler, "u");
      return found.length >= 1 ? found : undefined;
    });
    expect(task!.params).toEqual({ v: 2 });
    await client().deleteSchedule({ scheduleId: "u" });
  });

  it("delete stops the ticks and keeps the tasks; deleting again answers false", async () => {
    const handler = "/sched_test/delete";
    await client().createSchedule({ schedule: { scheduleId: "d", handler, every: durationFromMs(1000) } });
    await eventually(async () => (await tasksOf(handler, "d")).length >= 1);
    expect((await client().deleteSchedule({ scheduleId: "d" })).deleted).toBe(true);
    const count = (await tasksOf(handler, "d")).length;
    expect((await failureOf(client().getSchedule({ scheduleId: "d" })))[0]).toBe(Code.NotFound);
    await sleep(2500); // a bounded look: no tick after the delete
    expect(await tasksOf(handler, "d")).toHaveLength(count);
    expect((await client().deleteSchedule({ scheduleId: "d" })).deleted).toBe(false);
    expect(await svc.redis.client.exists(keys.scheduleKey("d"))).toBe(0);
  });

  it("answers ALREADY_EXISTS for a taken id and NOT_FOUND for a missing one", async () => {
    const def = { scheduleId: "taken", handler: "/sched_test/x", cron: "0 0 1 1 *" };
    await client().createSchedule({ schedule: def });
    const [code, message] = await failureOf(client().createSchedule({ schedule: { ...def, handler: "/sched_test/y" } }));
    expect(code).toBe(Code.AlreadyExists);
    expect(message).toContain("taken");
    expect((await client().getSchedule({ scheduleId: "taken" })).schedule!.handler).toBe("/sched_test/x");
    for (const call of [
      client().getSchedule({ scheduleId: "missing" }),
      client().pauseSchedule({ scheduleId: "missing" }),
      client().resumeSchedule({ scheduleId: "missing" }),
      client().updateSchedule({ schedule: { ...def, scheduleId: "missing" } }),
    ]) {
      expect((await failureOf(call))[0]).toBe(Code.NotFound);
    }
    expect(await svc.redis.client.exists(keys.scheduleKey("missing"))).toBe(0);
    await client().deleteSchedule({ scheduleId: "taken" });
  });
});

describe("bad input", () => {
  const good: ScheduleInit = { scheduleId: "bad-input", handler: "/sched_test/bad", every: durationFromMs(60_000) };
  const cases: Array<[string, ScheduleInit | undefined, string]> = [
    ["no schedule", undefined, "schedule"],
    ["no id", { ...good, scheduleId: "" }, "schedule_id"],
    ["an id with a space", { ...good, scheduleId: "bad id" }, "schedule_id"],
    ["an id of 129 characters", { ...good, scheduleId: "x".repeat(129) }, "schedule_id"],
    ["no handler", { ...good, handler: "" }, "handler"],
    ["a handler that is no path", { ...good, handler: "nope" }, "handler"],
    ["params over the size limit", { ...good, params: { s: "x".repeat(5000) } }, "params"],
    ["neither cron nor every", { ...good, every: undefined }, "cron"],
    ["both cron and every", { ...good, cron: "* * * * *" }, "every"],
    ["every under 1 s", { ...good, every: durationFromMs(500) }, "every"],
    ["every of 0.999 s", { ...good, every: durationFromMs(999) }, "every"],
    ["every over a year", { ...good, every: durationFromMs(366 * 86_400_000) }, "every"],
    ["a cron minute of 61", { ...good, every: undefined, cron: "61 * * * *" }, "cron"],
    ["a cron of 7 fields", { ...good, every: undefined, cron: "0 0 0 1 1 * 2030" }, "cron"],
    ["a cron of 4 fields", { ...good, every: undefined, cron: "0 0 1 1" }, "cron"],
    ["a cron that never matches", { ...good, every: undefined, cron: "0 0 30 2 *" }, "cron"],
    ["an unknown time zone", { ...good, every: undefined, cron: "0 * * * *", timeZone: "Mars/Olympus" }, "time_zone"],
    ["an offset for a time zone", { ...good, every: undefined, cron: "0 * * * *", timeZone: "+01:00" }, "time_zone"],
    ["a time zone with every", { ...good, timeZone: "Europe/Berlin" }, "time_zone"],
    [
      "end_at before start_at",
      { ...good, startAt: timestampFromMs(Date.now() + 10_000), endAt: timestampFromMs(Date.now()) },
      "end_at",
    ],
    ["an end_at that has passed", { ...good, endAt: timestampFromMs(Date.now() - 1000) }, "end_at"],
    ["a task delay", { ...good, options: { delay: durationFromMs(1000) } }, "options.delay"],
    ["a task start_at", { ...good, options: { startAt: timestampFromMs(Date.now() + 1000) } }, "options.start_at"],
    ["max_attempts over 100", { ...good, options: { maxAttempts: 101 } }, "max_attempts"],
    ["a priority of 2", { ...good, options: { priority: 2 } }, "priority"],
    ["a timeout of 0.1 ms", { ...good, options: { timeout: { seconds: 0n, nanos: 100_000 } } }, "timeout"],
  ];

  it.each(cases)("refuses %s (INVALID_ARGUMENT naming the field) and creates nothing", async (_name, schedule, field) => {
    const [code, message] = await failureOf(client().createSchedule(schedule ? { schedule } : {}));
    expect(code).toBe(Code.InvalidArgument);
    expect(message.startsWith(`${field}: `)).toBe(true);
  });

  it("stored nothing for any of them, and an update with bad input changes nothing", async () => {
    expect((await client().listSchedules({})).schedules.map((s) => s.scheduleId)).not.toContain("bad-input");
    const before = (await client().createSchedule({ schedule: good })).schedule!;
    for (const [, schedule, field] of cases) {
      if (!schedule || schedule.scheduleId !== good.scheduleId) continue;
      const [code, message] = await failureOf(client().updateSchedule({ schedule }));
      expect(code).toBe(Code.InvalidArgument);
      expect(message.startsWith(`${field}: `)).toBe(true);
    }
    expect((await client().getSchedule({ scheduleId: "bad-input" })).schedule).toEqual(before);
    await client().deleteSchedule({ scheduleId: "bad-input" });
  });

  it("refuses a malformed id in every call by id", async () => {
    for (const call of [
      client().getSchedule({ scheduleId: "" }),
      client().pauseSchedule({ scheduleId: "a b" }),
      client().resumeSchedule({ scheduleId: "ü" }),
      client().deleteSchedule({ scheduleId: "x".repeat(200) }),
    ]) {
      expect((await failureOf(call))[0]).toBe(Code.InvalidArgument);
    }
  });
});

describe("tokens", () => {
  it("needs a token; a limited one sees and changes only the schedules of the handlers it covers", async () => {
    expect((await failureOf(client("").listSchedules({})))[0]).toBe(Code.Unauthenticated);
    await client().createSchedule({ schedule: { scheduleId: "mine", handler: "/sched_narrow/a", cron: "0 0 1 1 *" } });
    await client().createSchedule({ schedule: { scheduleId: "theirs", handler: "/sched_test/b", cron: "0 0 1 1 *" } });
    const narrow = client(NARROW);

    expect((await narrow.listSchedules({})).schedules.map((s) => s.scheduleId)).toEqual(["mine"]);
    expect((await client().listSchedules({})).schedules.map((s) => s.scheduleId)).toEqual(
      expect.arrayContaining(["mine", "theirs"]),
    );
    expect((await narrow.getSchedule({ scheduleId: "mine" })).schedule!.handler).toBe("/sched_narrow/a");
    for (const call of [
      narrow.getSchedule({ scheduleId: "theirs" }),
      narrow.pauseSchedule({ scheduleId: "theirs" }),
      narrow.resumeSchedule({ scheduleId: "theirs" }),
      narrow.updateSchedule({ schedule: { scheduleId: "theirs", handler: "/sched_narrow/a", cron: "0 0 1 1 *" } }),
    ]) {
      const [code, message] = await failureOf(call);
      expect(code).toBe(Code.NotFound);
      expect(message).toContain("not one this token may see");
    }
    expect((await narrow.deleteSchedule({ scheduleId: "theirs" })).deleted).toBe(false);
    const [code] = await failureOf(
      narrow.createSchedule({ schedule: { scheduleId: "other", handler: "/sched_test/c", cron: "0 0 1 1 *" } }),
    );
    expect(code).toBe(Code.PermissionDenied);
    // Moving its own schedule to a handler it does not cover is refused too.
    const [moved] = await failureOf(
      narrow.updateSchedule({ schedule: { scheduleId: "mine", handler: "/sched_test/c", cron: "0 0 1 1 *" } }),
    );
    expect(moved).toBe(Code.PermissionDenied);

    const theirs = (await client().getSchedule({ scheduleId: "theirs" })).schedule!;
    expect(theirs.handler).toBe("/sched_test/b");
    expect(theirs.paused).toBe(false);
    expect((await client().getSchedule({ scheduleId: "mine" })).schedule!.handler).toBe("/sched_narrow/a");
    expect(await svc.redis.client.exists(keys.scheduleKey("other"))).toBe(0);
    expect((await narrow.deleteSchedule({ scheduleId: "mine" })).deleted).toBe(true);
    await client().deleteSchedule({ scheduleId: "theirs" });
  });
});

describe("the scheduler's cost", () => {
  it("idle, it sends Redis nothing between its reads (one per 30 s); a new schedule wakes it at once", async () => {
    const own = await startRedis(); // no other test's traffic in the counts
    const calls = async () => {
      const info = await own.client.info("commandstats");
      return [...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)]
        .filter((m) => m[1] !== "info")
        .reduce((sum, m) => sum + Number(m[2]), 0);
    };
    const bc = await BaiChuan.connect({ redis: own.url });
    try {
      bc.startScheduler();
      await eventually(async () => (await own.client.pubsub("SHARDNUMSUB", keys.SCHEDULE_CHANNEL))[1] === 1);
      await sleep(300); // its first read is over
      const before = await calls();
      await sleep(2500); // a bounded look: nothing while idle
      expect((await calls()) - before).toBe(0);
      // Another process creates a schedule: this scheduler hears it and makes its first tick's task.
      const other = await BaiChuan.connect({ redis: own.url });
      await other.schedules.create({ id: "woken", handler: "/sched_test/woken", every: 1 });
      await other.close();
      await eventually(async () => (await bc.schedules.get("woken")).lastTaskId !== undefined, 10_000);
    } finally {
      await bc.close();
      await own.destroy();
    }
  });
});
