/**
 * Redis going away and coming back: calls answer UNAVAILABLE (or the legacy stat) quickly, nothing
 * crashes, and everything works again once Redis is back, without a restart.
 */

import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { eventually, getJson, PROTOCOLS, postJson, startService, type TestService } from "./support/service.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

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
    const client = svc.clients["connect-h2"];
    const { taskId } = await eventually(async () => {
      try {
        return await client.createTask({ handler: "/demo_api/echo", params: { back: true } });
      } catch {
        return undefined;
      }
    }, 15_000);
    // The worker was woken through its re-subscribed channel (or its resync after reconnect).
    let last: TaskStatus | undefined;
    for await (const { task } of client.watchTask({ taskId }, { timeoutMs: 15_000 })) last = task!.status;
    expect(last).toBe(TaskStatus.FINISHED);
  });
});
