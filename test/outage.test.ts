/**
 * Redis going away and coming back: calls answer UNAVAILABLE (or the legacy stat) quickly, nothing
 * crashes, and everything works again once Redis is back, without a restart.
 */

import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { startRedis } from "./support/redis.js";
import { codeOf, eventually, gate, getJson, PROTOCOLS, postJson, startService, type TestService } from "./support/service.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

describe("while Redis is down", () => {
  let known = "";
  beforeAll(async () => {
    known = (await svc.clients.grpc.createTask({ handler: "/demo_api/ping" })).taskId;
    await svc.bc.wait(known);
    await svc.redis.stop();
  });

  it.each(PROTOCOLS)("every rpc answers UNAVAILABLE over %s", async (protocol) => {
    const client = svc.clients[protocol];
    expect(await codeOf(client.createTask({ handler: "/demo_api/ping" }))).toBe(Code.Unavailable);
    expect(await codeOf(client.getTask({ taskId: known }))).toBe(Code.Unavailable);
    const watch = (async () => {
      for await (const _ of client.watchTask({ taskId: known })) void _;
    })();
    expect(await codeOf(watch)).toBe(Code.Unavailable);
  });

  it("the legacy URLs answer a clear stat", async () => {
    const created = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: "/demo_api/ping", params: {} });
    expect(created.status).toBe(200);
    expect(created.json.stat).toBe("ERR_REDIS_UNAVAILABLE");
    const got = await getJson(svc.baseUrl, `/baichuan/task_get?task_id=${known}`);
    expect(got.json.stat).toBe("ERR_REDIS_UNAVAILABLE");
    const health = await fetch(`${svc.baseUrl}/healthz`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as any).stat).toBe("ERR_REDIS_UNAVAILABLE");
  });

  it("everything works again once Redis is back", async () => {
    await svc.redis.restart();
    // Both connections reconnect on their own, each at its own pace: wait until health says so.
    await eventually(async () => (await fetch(`${svc.baseUrl}/healthz`)).status === 200 || undefined, 60_000);
    const client = svc.clients["connect-h2"];
    const { taskId } = await client.createTask({ handler: "/demo_api/echo", params: { back: true } });
    // The worker was woken through its re-subscribed channel (or its resync after reconnect).
    let last: TaskStatus | undefined;
    for await (const { task } of client.watchTask({ taskId }, { timeoutMs: 60_000 })) last = task!.status;
    expect(last).toBe(TaskStatus.FINISHED);
  });
});

describe("watch streams across an outage", () => {
  it("survive a short blip: the stream re-reads the task and still ends with its terminal state", async () => {
    const redis = await startRedis(["--appendonly", "yes", "--appendfsync", "always"]);
    const blip = await startService({ redis });
    try {
      const client = blip.clients.grpc;
      const { taskId } = await client.createTask({ handler: "/demo_api/sleep", params: { seconds: 1 } });
      const statuses: TaskStatus[] = [];
      const stream = (async () => {
        for await (const { task } of client.watchTask({ taskId }, { timeoutMs: 60_000 })) statuses.push(task!.status);
      })();
      await eventually(() => statuses.includes(TaskStatus.STARTED) || undefined);
      await redis.stop(true);
      await new Promise((r) => setTimeout(r, 300));
      await redis.restart();
      await stream;
      expect(statuses.at(-1)).toBe(TaskStatus.FINISHED);
    } finally {
      await blip.close();
      await redis.destroy();
    }
  });

  it("end with UNAVAILABLE when Redis stays away, instead of hanging", async () => {
    const redis = await startRedis();
    const down = await startService({ redis, watchOutageMs: 500 });
    try {
      const client = down.clients["connect-h1"];
      const { taskId } = await client.createTask({ handler: "/demo_api/sleep", params: { seconds: 30 } });
      const watching = gate();
      const stream = (async () => {
        for await (const _ of client.watchTask({ taskId })) watching.open();
      })();
      await watching.opened; // subscribed: the first message came
      await redis.stop(true);
      const t0 = Date.now();
      expect(await codeOf(stream)).toBe(Code.Unavailable);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      await down.close();
      await redis.destroy();
    }
  });
});
