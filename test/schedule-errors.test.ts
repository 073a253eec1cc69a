/**
 * A tick whose create is refused for good (the handler's queue is full) passes, and the schedule
 * says why: `last_error` in GetSchedule and ListSchedules, and a `last error` line in `baichuan
 * schedules get`, cleared by the next task the schedule creates. Through the real listener, the
 * scheduler in the service's process, a real redis-server.
 */
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ScheduleService } from "../gen/baichuan/v1/schedule_pb.js";
import { main } from "../src/cli/main.js";
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
