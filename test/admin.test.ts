/**
 * AdminService through the real listener, against a real redis-server: queue counts, workers,
 * task listings with paging, emptying a queue, and tokens that see only some handlers.
 */
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import { codeOf, eventually, gate, startService, type TestService } from "./support/service.js";

const HOLD = "/admin_test/hold";
const FAIL = "/admin_test/fail";
const OK = "/admin_test/ok";
const hold = gate();

let svc: TestService;
const admin = () => createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
const held: string[] = [];

beforeAll(async () => {
  svc = await startService({
    handlers: {
      [HOLD]: async () => hold.opened,
      [FAIL]: () => {
        throw new Error("no");
      },
      [OK]: () => ({ ok: true }),
    },
    worker: { concurrency: 1, retryBaseMs: 1 },
    authTokens: ["root-token-0123456789", "narrow-token-0123456789=/admin_test/ok"],
  });
  // One HOLD task runs (concurrency 1) and three wait behind it.
  for (let i = 0; i < 4; i++) held.push((await svc.bc.enqueue(HOLD, { i })).id);
  await eventually(async () => (await svc.bc.getTask(held[0]!)).status === "started");
});
afterAll(async () => {
  hold.open();
  await svc?.close();
});

const root = { headers: { authorization: "Bearer root-token-0123456789" } };
const narrow = { headers: { authorization: "Bearer narrow-token-0123456789" } };

describe("ListQueues and ListWorkers", () => {
  it("counts queued, running, waiting retries and ended runs per handler, and the oldest task's wait", async () => {
    const { queues } = await admin().listQueues({}, root);
    const q = queues.find((x) => x.handler === HOLD)!;
    expect(q.queued).toBe(3n);
    expect(q.started).toBe(1n);
    expect(q.scheduled).toBe(0n);
    expect(q.oldestQueuedAge).toBeDefined();
    expect(queues.map((x) => x.handler)).toEqual([...queues.map((x) => x.handler)].sort());
  });

  it("lists the live worker with its handlers, state, heartbeat and process", async () => {
    const { workers } = await admin().listWorkers({}, root);
    expect(workers).toHaveLength(1);
    const w = workers[0]!;
    expect(w.pid).toBe(process.pid);
    expect(w.handlers).toEqual(expect.arrayContaining([HOLD, FAIL, OK]));
    expect(w.name).toMatch(new RegExp(`:${process.pid}$`));
    expect(Number(w.heartbeatAge!.seconds)).toBeLessThan(30);
    expect(w.startedAt).toBeDefined();
  });

  it("shows a narrow token only the handlers it covers", async () => {
    await svc.bc.enqueue(OK, {});
    const { queues } = await admin().listQueues({}, narrow);
    expect(queues.map((q) => q.handler)).toEqual([OK]);
    const { workers } = await admin().listWorkers({}, narrow);
    expect(workers[0]!.handlers).toEqual([OK]);
    expect(await codeOf(admin().listTasks({ handler: HOLD, status: TaskStatus.QUEUED }, narrow))).toBe(Code.PermissionDenied);
    expect(await codeOf(admin().listQueues({}))).toBe(Code.Unauthenticated);
  });
});

describe("ListTasks", () => {
  it("pages through the queue in order, then ends with an empty token", async () => {
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await admin().listTasks({ handler: HOLD, status: TaskStatus.QUEUED, pageSize: 2, pageToken }, root);
      seen.push(...page.tasks.map((t) => t.id));
      for (const t of page.tasks) expect(t.status).toBe(TaskStatus.QUEUED);
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 10);
    expect(seen).toEqual(held.slice(1));
    const started = await admin().listTasks({ handler: HOLD, status: TaskStatus.STARTED }, root);
    expect(started.tasks.map((t) => t.id)).toEqual([held[0]]);
  });

  it("finds ended tasks by scanning, with their results", async () => {
    hold.open(); // the worker runs one task at a time: let the held ones go
    const ids = [(await svc.bc.enqueue(FAIL, {})).id, (await svc.bc.enqueue(FAIL, { b: 1 })).id];
    for (const id of ids) expect((await svc.bc.wait(id, { timeoutMs: 60_000 })).status).toBe("failed");
    const found: string[] = [];
    let pageToken = "";
    do {
      const page = await admin().listTasks({ handler: FAIL, status: TaskStatus.FAILED, pageSize: 1, pageToken }, root);
      expect(page.tasks.length).toBeLessThanOrEqual(1); // never more than asked, though SCAN finds both at once
      for (const t of page.tasks) {
        expect(t.status).toBe(TaskStatus.FAILED);
        expect(t.errorCode).toBe("ERR_SERVER_EXCEPTION");
        found.push(t.id);
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(found.sort()).toEqual([...ids].sort());
    const { queues } = await admin().listQueues({}, root);
    expect(queues.find((q) => q.handler === FAIL)!.failedTotal).toBe(2n);
  });

  it.each([
    ["a page size over 1,000", { handler: HOLD, status: TaskStatus.QUEUED, pageSize: 5000 }],
    ["a forged page token", { handler: HOLD, status: TaskStatus.QUEUED, pageToken: "9:-1" }],
    ["a token of another kind of listing", { handler: HOLD, status: TaskStatus.FAILED, pageToken: "0:5" }],
    ["no status", { handler: HOLD }],
    ["a malformed handler", { handler: "../x", status: TaskStatus.QUEUED }],
  ])("refuses %s with INVALID_ARGUMENT", async (_name, req) => {
    expect(await codeOf(admin().listTasks(req, root))).toBe(Code.InvalidArgument);
  });
});

describe("EmptyQueue", () => {
  it("deletes a handler's queued tasks (and waiting retries), and its ended tasks by state", async () => {
    hold.open();
    const blocker = await svc.bc.enqueue(HOLD, { block: true }); // held tasks now end at once
    await svc.bc.wait(blocker.id, { timeoutMs: 60_000 });
    // Queue work nobody will run: a handler with no worker in this process.
    const ORPHAN = "/admin_test/orphan";
    const queued = [];
    for (let i = 0; i < 5; i++) queued.push((await svc.bc.enqueue(ORPHAN, { i })).id);
    const { deleted } = await admin().emptyQueue({ handler: ORPHAN, status: TaskStatus.QUEUED }, root);
    expect(deleted).toBe(5n);
    expect(await svc.redis.client.llen(keys.queueKey(ORPHAN))).toBe(0);
    for (const id of queued) expect(await svc.bc.exists(id)).toBe(false);

    const failed = await admin().emptyQueue({ handler: FAIL, status: TaskStatus.FAILED }, root);
    expect(failed.deleted).toBe(2n);
    expect((await admin().listTasks({ handler: FAIL, status: TaskStatus.FAILED }, root)).tasks).toEqual([]);
  });

  it("empties thousands of ended tasks, across several SCAN steps and pages", async () => {
    const H = "/admin_test/many"; // no worker has it
    const created = await svc.bc.enqueueMany(Array.from({ length: 3000 }, (_, i) => ({ handler: H, params: { i } })));
    const ids = created.map((r) => (r as { id: string }).id);
    await Promise.all(ids.map((id) => svc.bc.cancel(id)));
    const { deleted } = await admin().emptyQueue({ handler: H, status: TaskStatus.CANCELED }, root);
    expect(deleted).toBe(3000n);
    const left = await Promise.all(ids.map((id) => svc.bc.exists(id)));
    expect(left.filter(Boolean)).toHaveLength(0);
  });

  it("refuses to empty running tasks", async () => {
    expect(await codeOf(admin().emptyQueue({ handler: HOLD, status: TaskStatus.STARTED }, root))).toBe(Code.InvalidArgument);
  });
});

describe("over Connect JSON, as curl would", () => {
  it("answers ListQueues to a plain JSON POST", async () => {
    const res = await fetch(`${svc.baseUrl}/baichuan.v1.AdminService/ListQueues`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer root-token-0123456789" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { queues: Array<{ handler: string }> };
    expect(body.queues.map((q) => q.handler)).toContain(HOLD);
  });
});
