/**
 * Progress reports: a handler's ctx.progress is stored on the task, streamed to watchers over the
 * real listener, and shown by GetTask; reports from a run that is no longer current change nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import { startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

describe("progress", () => {
  it("streams each report to a watcher, in order, and GetTask shows the last one", async () => {
    const client = svc.clients.grpc;
    const { taskId } = await client.createTask({ handler: "/demo_api/steps", params: { steps: 4, ms: 50 } });
    const seen: Array<[number, string]> = [];
    let last: TaskStatus | undefined;
    for await (const { task } of client.watchTask({ taskId })) {
      if (task!.progress > 0 && task!.progress !== seen.at(-1)?.[0]) seen.push([task!.progress, task!.progressMessage]);
      last = task!.status;
    }
    expect(last).toBe(TaskStatus.FINISHED);
    expect(seen).toEqual([
      [25, "step 1 of 4"],
      [50, "step 2 of 4"],
      [75, "step 3 of 4"],
      [100, "step 4 of 4"],
    ]);
    const { task } = await client.getTask({ taskId });
    expect(task!.progress).toBe(100);
    expect(task!.progressMessage).toBe("step 4 of 4");
  });

  it("refuses a percent that is not a finite number", async () => {
    const own = await startService({
      redis: svc.redis,
      demo: false,
      handlers: {
        "/progress_test/nan": async (_p, ctx) => {
          const err = await ctx.progress(Number.NaN).then(
            () => "accepted",
            (e: unknown) => String(e),
          );
          return { err };
        },
      },
    });
    try {
      const { id } = await own.bc.enqueue("/progress_test/nan", {});
      const task = await own.bc.wait(id, { timeoutMs: 60_000 });
      expect(task.result).toEqual({ err: expect.stringContaining("finite number") });
      expect(task.progress).toBeUndefined();
    } finally {
      await own.close();
    }
  });

  it("ignores a report from a run that is not the task's current one, or that ended", async () => {
    const H = "/progress_test/nobody"; // no worker has it: the test plays the worker
    const { id } = await svc.bc.enqueue(H, {});
    const [task] = await storeOf(svc.bc).fetchTasks(H, 1, "w:1:1", 10_000);
    expect(task!.id).toBe(id);
    expect(await storeOf(svc.bc).reportProgress(task!, "w:1:1", 40, "half")).toBe(true);
    expect(await storeOf(svc.bc).reportProgress(task!, "w:9:9", 50, "not mine")).toBe(false);
    // A report of an earlier run of the task (attempt 0) by the same worker changes nothing either.
    expect(await storeOf(svc.bc).reportProgress({ ...task!, attempts: 0 }, "w:1:1", 45, "earlier run")).toBe(false);
    const end = {
      kind: "finished" as const,
      resultJson: '{"stat":"OK","data":null}',
      cost: 0.01,
      worker: "w:1:1",
    };
    expect(await storeOf(svc.bc).finishTask(task!, end)).toBe("ended");
    expect(await storeOf(svc.bc).reportProgress(task!, "w:1:1", 90, "late")).toBe(false);
    const fields = await svc.redis.client.hgetall(keys.taskKey(id));
    expect([fields.progress, fields.progress_message]).toEqual(["40", "half"]);
  });
});
