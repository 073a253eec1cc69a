/**
 * The original's admin URLs under /canghai/, curl-style JSON over HTTP/1.1 against the real
 * listener and a real redis-server, with the original's `stat` convention.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as keys from "../src/store/keys.js";
import { eventually, gate, getJson, postJson, startService, type TestService } from "./support/service.js";

const HOLD = "/canghai_test/hold";
const hold = gate();
let svc: TestService;
const held: string[] = [];

beforeAll(async () => {
  svc = await startService({ handlers: { [HOLD]: async () => hold.opened }, worker: { concurrency: 1 } });
  for (let i = 0; i < 3; i++) held.push((await svc.bc.enqueue(HOLD, { i })).id);
  await eventually(async () => (await svc.bc.getTask(held[0]!)).status === "started");
});
afterAll(async () => {
  hold.open();
  await svc?.close();
});

const call = (name: string, body: unknown) => postJson(svc.baseUrl, `/canghai/${name}`, body);

describe("/canghai/", () => {
  it("list_queues: counts per queue", async () => {
    const { status, json } = await call("list_queues", {});
    expect(status).toBe(200);
    expect(json.stat).toBe("OK");
    const q = json.data.find((x: { queue: string }) => x.queue === HOLD);
    expect(q).toMatchObject({ queue: HOLD, queued: 2, started: 1, scheduled: 0 });
    expect(q.oldest_queued_age).toBeGreaterThanOrEqual(0);
  });

  it("list_workers and worker_info (GET with a query string too)", async () => {
    const { json } = await call("list_workers", {});
    expect(json.stat).toBe("OK");
    expect(json.data).toHaveLength(1);
    const name = json.data[0].name as string;
    expect(json.data[0]).toMatchObject({ pid: process.pid });
    expect(["busy", "idle"]).toContain(json.data[0].state); // as of its last heartbeat
    expect(json.data[0].queues).toContain(HOLD);
    const one = await getJson(svc.baseUrl, `/canghai/worker_info?name=${encodeURIComponent(name)}`);
    expect(one.json).toMatchObject({ stat: "OK", data: { name } });
    expect((await call("worker_info", { name: "nobody:1:1" })).json.stat).toBe("ERR_WORKER_NOT_EXIST");
  });

  it("list_msgs pages with next_cursor; msg_info shows a task's fields", async () => {
    const first = await call("list_msgs", { queue: HOLD, state: "queued", size: 1 });
    expect(first.json.stat).toBe("OK");
    expect(first.json.data.msgs.map((m: { task_id: string }) => m.task_id)).toEqual([held[1]]);
    const second = await call("list_msgs", { queue: HOLD, state: "queued", size: 1, cursor: first.json.data.next_cursor });
    expect(second.json.data.msgs.map((m: { task_id: string }) => m.task_id)).toEqual([held[2]]);

    const { json } = await call("msg_info", { task_id: held[1] });
    expect(json.stat).toBe("OK");
    expect(json.data).toMatchObject({ task_id: held[1], origin: HOLD, status: "queued" });
    expect(json.data.enqueued_at).toBe(json.data.created_at);
    expect(json.data.ver).toBeUndefined();
  });

  it("delete_msg and empty_queue delete, and say how many", async () => {
    expect((await call("delete_msg", { task_id: held[2] })).json).toEqual({ stat: "OK", data: { deleted: true } });
    expect(await svc.redis.client.exists(keys.taskKey(held[2]!))).toBe(0);
    expect((await call("delete_msg", { task_id: held[2] })).json).toEqual({ stat: "OK", data: { deleted: false } });
    expect((await call("empty_queue", { queue: HOLD, state: "queued" })).json).toEqual({ stat: "OK", data: { deleted: 1 } });
    expect(await svc.redis.client.llen(keys.queueKey(HOLD))).toBe(0);
  });

  it.each([
    ["msg_info", { task_id: "0000000000000000000A" }, "ERR_MSG_NOT_EXIST"],
    ["msg_info", { task_id: "../../x" }, "ERR_MSG_NOT_EXIST"],
    ["msg_info", { task_id: "AC3C301A7CA516EA" }, "ERR_MSG_NOT_EXIST"],
    ["msg_info", { task_id: "" }, "ERR_BAD_PARAMS"],
    ["msg_info", { task_id: 5 }, "ERR_BAD_PARAMS"],
    ["msg_info", { task_id: "x".repeat(257) }, "ERR_BAD_PARAMS"],
    ["delete_msg", { task_id: "" }, "ERR_BAD_PARAMS"],
    ["delete_msg", { task_id: "x".repeat(257) }, "ERR_BAD_PARAMS"],
    ["list_msgs", { queue: HOLD, state: "queued", size: "many" }, "ERR_BAD_PARAMS"],
    ["list_msgs", { queue: HOLD, state: "sideways" }, "ERR_BAD_PARAMS"],
    ["list_msgs", { queue: HOLD, state: "queued", size: 100_000 }, "ERR_BAD_PARAMS"],
    ["list_msgs", { queue: HOLD, state: "queued", cursor: "not a cursor" }, "ERR_BAD_PARAMS"],
    ["empty_queue", { queue: HOLD, state: "started" }, "ERR_BAD_PARAMS"],
    ["empty_queue", { queue: "no-slash", state: "queued" }, "ERR_BAD_PARAMS"],
    ["worker_info", {}, "ERR_BAD_PARAMS"],
  ])("%s %j answers %s and changes nothing", async (name, body, stat) => {
    const before = await svc.redis.client.dbsize();
    const { json } = await call(name, body);
    expect(json.stat).toBe(stat);
    expect(typeof json.error).toBe("string");
    expect(await svc.redis.client.dbsize()).toBe(before);
  });

  it.each([["AC3C301A7CA516EA"], ["../../x"], ["0000000000000000000A"]])(
    "delete_msg of an id no task has (%s) deletes nothing, whatever the id's form",
    async (taskId) => {
      const before = await svc.redis.client.dbsize();
      expect((await call("delete_msg", { task_id: taskId })).json).toEqual({ stat: "OK", data: { deleted: false } });
      expect(await svc.redis.client.dbsize()).toBe(before);
    },
  );

  it("answers an unknown admin call like any unknown URL", async () => {
    const { status, json } = await call("drop_everything", {});
    expect(status).toBe(400);
    expect(json.stat).toBe("ERR_NOT_FOUND");
  });
});
