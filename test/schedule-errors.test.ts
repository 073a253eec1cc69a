/**
 * A tick whose create is refused for good (the handler's queue is full) passes, and the schedule
 * says why: `last_error` in GetSchedule and ListSchedules, and a `last error` line in `baichuan
 * schedules get`, cleared by the next task the schedule creates; a schedule whose ticks fail backs
 * off alone, the others keep ticking. Through the real listener, the scheduler in the service's
 * process, a real redis-server.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ScheduleService } from "../gen/baichuan/v1/schedule_pb.js";
import { main } from "../src/cli/main.js";
import { queueKey } from "../src/store/keys.js";
import { eventually, startService, type TestService } from "./support/service.js";

const ALL = { allows: () => true };
const HANDLER = "/sched_full/tick";

let svc: TestService;
const client = () => createClient(ScheduleService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));

beforeAll(async () => {
  // No worker: the schedule's tasks stay queued, and its handler's queue holds at most 2.
  svc = await startService({ scheduler: true, worker: false, limits: { maxQueued: 2 } });
});
afterAll(async () => {
  await svc?.close();
});

async function cliGet(id: string): Promise<{ code: number; stdout: string }> {
  let stdout = "";
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("BAICHUAN_")) delete env[k];
  env.BAICHUAN_URL = svc.baseUrl;
  const code = await main(["schedules", "get", id], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: () => {} },
    env,
  });
  return { code, stdout };
}

describe("a tick that created no task", () => {
  it("shows the reason as the schedule's last error until the next task is created", async () => {
    await client().createSchedule({ schedule: { scheduleId: "full", handler: HANDLER, every: durationFromMs(1000) } });

    // Two ticks fill the queue; the third is refused, passes, and the schedule says why.
    const refused = await eventually(async () => {
      const { schedule } = await client().getSchedule({ scheduleId: "full" });
      return schedule!.lastError ? schedule! : undefined;
    });
    expect(refused.lastError).toMatch(/queue of \/sched_full\/tick holds 2 tasks/);
    expect(refused.lastTaskId).not.toBe("");
    expect((await svc.bc.admin.queues(ALL)).find((q) => q.handler === HANDLER)?.queued).toBe(2);
    const listed = (await client().listSchedules({})).schedules.find((s) => s.scheduleId === "full");
    expect(listed?.lastError).toMatch(/holds 2 tasks/);

    const shown = await cliGet("full");
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^last error\s+the queue of \/sched_full\/tick holds 2 tasks/m);

    // Room in the queue again: the next tick creates a task and the error is gone.
    await svc.bc.admin.empty(HANDLER, "queued", ALL);
    const recovered = await eventually(async () => {
      const { schedule } = await client().getSchedule({ scheduleId: "full" });
      return schedule!.lastError === "" && schedule!.lastTaskId !== refused.lastTaskId ? schedule! : undefined;
    });
    expect(recovered.lastTaskId).not.toBe("");
    expect((await cliGet("full")).stdout).not.toMatch(/last error/);
    await client().deleteSchedule({ scheduleId: "full" });
  });
});

describe("a schedule whose ticks fail", () => {
  const BROKEN = "/sched_broken/tick";
  const HEALTHY = "/sched_healthy/tick";
  let other: TestService;
  const schedules = () => createClient(ScheduleService, createConnectTransport({ baseUrl: other.baseUrl, httpVersion: "1.1" }));

  beforeAll(async () => {
    other = await startService({ scheduler: true, worker: false });
  });
  afterAll(async () => {
    await other?.close();
  });

  it("does not hold back the ticks of the others: each schedule backs off on its own", async () => {
    // The broken schedule's queue key holds a string, so every create of its ticks fails (as when
    // the Redis Cluster slot of its handler is away); it stays due and is retried with a backoff.
    await other.redis.client.set(queueKey(BROKEN), "not a list");
    const every = durationFromMs(1000);
    await schedules().createSchedule({ schedule: { scheduleId: "broken", handler: BROKEN, every } });
    await schedules().createSchedule({ schedule: { scheduleId: "healthy", handler: HEALTHY, every } });
    // Long enough for a shared backoff to have grown past the missed-tick tolerance (0.5 + 1 + 2 +
    // 4 s, then 8 s): the healthy schedule would have merged ticks.
    const TICKS = 18;
    const ticks = await eventually(async () => {
      const page = await other.bc.admin.tasks(HEALTHY, "queued", 100, "", ALL);
      const at = page.tasks.map((t) => Date.parse(t.scheduleTick ?? "")).sort((a, b) => a - b);
      return at.length >= TICKS ? at : undefined;
    }, 90_000);
    // One task per tick, none merged: consecutive ticks 1 s apart.
    expect(ticks.slice(1).map((t, i) => t - ticks[i]!)).toEqual(Array(ticks.length - 1).fill(1000));
    const broken = (await schedules().getSchedule({ scheduleId: "broken" })).schedule!;
    expect(broken.lastTaskId).toBe("");
    expect(broken.nextRunAt).toBeDefined(); // still due: retried, never advanced without its task
  });
});
