/**
 * Concurrency keys ("fair groups", lua/lib/groups.lua) against a real redis-server, through the
 * real listener: one key's 10,000 queued tasks do not hold back another key's 10, keys take turns,
 * grouped and ungrouped tasks alternate, priority orders a key's tasks, max_running_per_key holds
 * and the counts stay right through a retry, a cancel, a delete, a queue ttl, RetryTask and
 * EmptyQueue; a raised cap lets held keys run at once; a bad key is refused on every entry point and
 * creates nothing. The per-key cap is set with SetQueueLimits.
 */
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { InvalidArgumentError } from "../src/core/errors.js";
import { handlerTag, taskKeyPrefix } from "../src/store/keys.js";
import { groupKeysLeft, mostAtOnce } from "./support/groups.js";
import { codeOf, eventually, gate, postJson, startService, type TestService } from "./support/service.js";

const FAIR = "/groups_test/fair";
const TURNS = "/groups_test/turns";
const MIXED = "/groups_test/mixed";
const COUNTS = "/groups_test/counts";
const BAD = "/groups_test/bad";
const RAISE = "/groups_test/raise";

/** Keys in the order their FAIR tasks ended, and in the order TURNS / MIXED tasks started. */
const fairEnded: string[] = [];
const turnsStarted: string[] = [];
const mixedStarted: string[] = [];
/** COUNTS tasks with params.hold wait here (or for their abort); params.failOnce fails each task's first run. */
let hold = gate();
/** RAISE tasks record their start and wait for this gate. */
const raiseStarted: number[] = [];
const raiseGate = gate();
const failed = new Set<string>();

let svc: TestService;
const admin = () => createClient(AdminService, createGrpcTransport({ baseUrl: svc.baseUrl }));
const queueInfo = async (handler: string) => (await admin().listQueues({})).queues.find((q) => q.handler === handler)!;

beforeAll(async () => {
  svc = await startService({
    handlers: {
      [FAIR]: (p) => void fairEnded.push(p.k as string),
      [TURNS]: (p) => void turnsStarted.push(p.k as string),
      [MIXED]: (p) => void mixedStarted.push(p.k as string),
      [COUNTS]: async (p, ctx) => {
        if (p.failOnce && !failed.has(ctx.taskId)) {
          failed.add(ctx.taskId);
          throw new Error("failing once on purpose");
        }
        if (p.hold) {
          await new Promise<void>((resolve, reject) => {
            void hold.opened.then(resolve);
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
          });
        }
        return { k: p.k ?? null };
      },
      [BAD]: () => null,
      [RAISE]: async (p) => {
        raiseStarted.push(p.i as number);
        await raiseGate.opened;
        return null;
      },
    },
    demo: false,
    worker: { concurrency: 8, retryBaseMs: 1, retryMaxMs: 10 },
    sweepMs: 100,
  });
});
const setCap = (handler: string, maxRunningPerKey: number) => admin().setQueueLimits({ handler, limits: { maxRunningPerKey } });

afterAll(async () => {
  hold.open();
  raiseGate.open();
  await svc?.close();
});

const grouped = (handler: string, k: string, params: Record<string, unknown> = {}, options: Record<string, unknown> = {}) => ({
  handler,
  params: { k, ...params },
  options: { concurrencyKey: k, ...options },
});

describe("concurrency keys", () => {
  it("runs key B's 10 tasks long before key A's 10,000 queued ahead of them (max_running_per_key 1), then drains A", async () => {
    await setCap(FAIR, 1);
    const client = svc.clients["connect-h2"];
    const a = await client.createTasks({ tasks: Array.from({ length: 10_000 }, (_, i) => grouped(FAIR, "A", { i })) });
    expect(a.results.every((r) => r.taskId !== "")).toBe(true);
    const b = await client.createTasks({ tasks: Array.from({ length: 10 }, (_, i) => grouped(FAIR, "B", { i })) });
    expect(b.results.every((r) => r.taskId !== "")).toBe(true);
    const created = fairEnded.length; // A's that ended before B's were queued do not count
    await eventually(() => fairEnded.filter((k) => k === "B").length === 10, 60_000);
    const tenthB = fairEnded.lastIndexOf("B");
    const aBefore = fairEnded.slice(created, tenthB).filter((k) => k === "A").length;
    expect(aBefore).toBeLessThan(100);

    // Lifting the cap lets A run 8 at once: its next end gives it turns again (nothing is stuck).
    const started = Date.now();
    await setCap(FAIR, 0);
    await eventually(async () => (await queueInfo(FAIR)).finishedTotal === 10_010n, 60_000);
    const drainMs = Date.now() - started;
    console.log(`B's 10th ended after ${aBefore} of A's; A's remaining tasks drained in ${drainMs} ms`);
    expect(drainMs).toBeLessThan(60_000);
    expect(fairEnded).toHaveLength(10_010);
    const q = await queueInfo(FAIR);
    expect(q).toMatchObject({ queued: 0n, started: 0n, queuedInGroups: 0n, groups: 0n, held: 0n });
    expect(await groupKeysLeft(svc.redis.client, FAIR, ["A", "B"])).toEqual([]);
  });

  it("gives keys turns with no cap: the tasks of 3 keys, created key after key, start interleaved", async () => {
    const tasks = ["x", "y", "z"].flatMap((k) => Array.from({ length: 20 }, (_, i) => grouped(TURNS, k, { i })));
    await svc.bc.enqueueMany(tasks); // one script call: every key is in line before the first fetch
    await eventually(() => turnsStarted.length === 60);
    for (let i = 0; i + 3 <= 60; i++) expect(new Set(turnsStarted.slice(i, i + 3)).size).toBe(3);
  });

  it("alternates grouped and ungrouped tasks, and takes a key's high priority tasks first", async () => {
    const ungrouped = Array.from({ length: 6 }, (_, i) => ({ handler: MIXED, params: { k: "-", i } }));
    // One key, "g", for the six grouped tasks: three low priority ones first, then three high.
    const inKey = (k: string, priority: number) => ({
      handler: MIXED,
      params: { k },
      options: { concurrencyKey: "g", priority },
    });
    const items = [...ungrouped, ...["L", "L", "L"].map((k) => inKey(k, -1)), ...["H", "H", "H"].map((k) => inKey(k, 1))];
    await svc.bc.enqueueMany(items);
    await eventually(() => mixedStarted.length === 12);
    expect(mixedStarted).toEqual(["-", "H", "-", "H", "-", "H", "-", "L", "-", "L", "-", "L"]);
  });

  it("keeps the counts right through a cancel, a delete of a running task, a retry, a queue ttl, RetryTask and EmptyQueue", async () => {
    await setCap(COUNTS, 1);
    hold = gate();
    const first = await svc.bc.enqueue(COUNTS, { k: "k", hold: true }, { concurrencyKey: "k" });
    await eventually(async () => (await svc.bc.getTask(first.id)).status === "started");
    const canceled = await svc.bc.enqueue(COUNTS, { k: "k" }, { concurrencyKey: "k" });
    const retried = await svc.bc.enqueue(COUNTS, { k: "k", failOnce: true }, { concurrencyKey: "k", maxAttempts: 2 });
    const other = await svc.bc.enqueue(COUNTS, { k: "other" }, { concurrencyKey: "other" });
    await eventually(async () => (await svc.bc.getTask(other.id)).status === "finished");
    expect(await queueInfo(COUNTS)).toMatchObject({ queued: 2n, started: 1n, queuedInGroups: 2n, groups: 1n, held: 2n });
    // GetTask shows the key.
    const shown = await svc.clients.grpc.getTask({ taskId: canceled.id });
    expect(shown.task!.concurrencyKey).toBe("k");

    expect((await svc.bc.cancel(canceled.id)).status).toBe("canceled");
    const expires = await svc.bc.enqueue(COUNTS, { k: "k" }, { concurrencyKey: "k", ttl: 0.05 });
    await eventually(async () => (await svc.bc.getTask(expires.id)).status === "failed");
    expect((await svc.bc.getTask(expires.id)).errorCode).toBe("ERR_MSG_EXPIRED");
    expect(await queueInfo(COUNTS)).toMatchObject({ queued: 1n, queuedInGroups: 1n, held: 1n, groups: 1n });

    // Deleting the running task frees the key's slot: the next one runs, fails once and is retried.
    await svc.bc.delete(first.id);
    await eventually(async () => (await svc.bc.getTask(retried.id)).status === "finished");
    expect((await svc.bc.getTask(retried.id)).attempts).toBe(2);

    // RetryTask puts the canceled one back in its key's line.
    await svc.bc.retry(canceled.id);
    await eventually(async () => (await svc.bc.getTask(canceled.id)).status === "finished");
    await eventually(async () => (await queueInfo(COUNTS)).started === 0n);
    expect(await queueInfo(COUNTS)).toMatchObject({ queued: 0n, queuedInGroups: 0n, groups: 0n, held: 0n });
    expect(await groupKeysLeft(svc.redis.client, COUNTS, ["k", "other"])).toEqual([]);

    // EmptyQueue deletes queued grouped tasks; the running one is left to end.
    hold = gate();
    const runner = await svc.bc.enqueue(COUNTS, { k: "e", hold: true }, { concurrencyKey: "e" });
    await eventually(async () => (await svc.bc.getTask(runner.id)).status === "started");
    await svc.bc.enqueueMany(Array.from({ length: 5 }, () => grouped(COUNTS, "e")));
    const listed = await admin().listTasks({ handler: COUNTS, status: TaskStatus.QUEUED, pageSize: 3 });
    expect(listed.tasks).toHaveLength(3);
    expect(listed.tasks.every((t) => t.concurrencyKey === "e")).toBe(true);
    expect((await admin().emptyQueue({ handler: COUNTS, status: TaskStatus.QUEUED })).deleted).toBe(5n);
    expect(await queueInfo(COUNTS)).toMatchObject({ queued: 0n, queuedInGroups: 0n, started: 1n, groups: 1n });
    hold.open();
    await eventually(async () => (await svc.bc.getTask(runner.id)).status === "finished");
    await eventually(async () => (await queueInfo(COUNTS)).groups === 0n);
    expect(await groupKeysLeft(svc.redis.client, COUNTS, ["e"])).toEqual([]);
    const tasks = await Promise.all([retried.id, canceled.id].map((id) => svc.bc.getTask(id)));
    expect(mostAtOnce(tasks).get("k")).toBe(1);
  });

  it("lets a key held at its cap start more at once when SetQueueLimits raises the cap", async () => {
    await setCap(RAISE, 1);
    const client = svc.clients["connect-h2"];
    const created = await client.createTasks({ tasks: [0, 1, 2].map((i) => grouped(RAISE, "R", { i })) });
    await eventually(() => (raiseStarted.length === 1 ? true : undefined));
    expect((await queueInfo(RAISE)).held).toBe(2n);
    // The first task still runs (its gate is shut): only the raised cap can start the other two.
    await setCap(RAISE, 3);
    await eventually(() => (raiseStarted.length === 3 ? true : undefined));
    expect((await queueInfo(RAISE)).held).toBe(0n);
    raiseGate.open();
    for (const { taskId } of created.results) {
      await eventually(async () => ((await client.getTask({ taskId })).task?.status === TaskStatus.FINISHED ? true : undefined));
    }
  });

  it("refuses a bad concurrency_key on CreateTask, CreateTasks, task_create and the library, creating nothing", async () => {
    const bad = ["", " lead", "trail ", "tab\there", "é", "x".repeat(129)];
    const client = svc.clients.grpc;
    for (const key of bad.slice(1)) {
      expect(await codeOf(client.createTask({ handler: BAD, options: { concurrencyKey: key } }))).toBe(Code.InvalidArgument);
    }
    const many = await client.createTasks({
      tasks: [
        { handler: BAD, options: { concurrencyKey: " x" } },
        { handler: BAD, options: { concurrencyKey: "é" } },
      ],
    });
    expect(many.results.map((r) => r.error?.code)).toEqual(["invalid_argument", "invalid_argument"]);
    for (const key of [...bad, 7, ["k"]]) {
      const { json } = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: BAD, concurrency_key: key });
      expect(json.stat).toBe("ERR_BAD_PARAMS");
      expect(json.error).toMatch(/^concurrency_key: /);
    }
    for (const key of bad) {
      await expect(svc.bc.enqueue(BAD, {}, { concurrencyKey: key })).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    expect(await svc.redis.client.keys(`${taskKeyPrefix(handlerTag(BAD))}*`)).toEqual([]); // nothing was created
    // A good key over the legacy URL is stored and shown.
    const { json } = await postJson(svc.baseUrl, "/baichuan/task_create", { handler: BAD, concurrency_key: "tenant:7" });
    expect(json.stat).toBe("OK");
    expect((await svc.bc.getTask(json.data.task_id)).concurrencyKey).toBe("tenant:7");
    await svc.bc.wait(json.data.task_id);
    const got = await postJson(svc.baseUrl, "/baichuan/task_get", { task_id: json.data.task_id });
    expect(got.json.task_info.concurrency_key).toBe("tenant:7");
    expect(got.json.task_info.group_seq).toBeUndefined(); // bookkeeping, not shown
  });
});
