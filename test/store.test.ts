/**
 * The Lua scripts' guarantees, each checked on a real redis-server by its starting and ending keys.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { StoreUnavailableError } from "../src/core/errors.js";
import * as keys from "../src/store/keys.js";
import { parseRedisUrl } from "../src/store/redis-url.js";
import { CODES } from "../src/store/scripts.js";
import { Store } from "../src/store/store.js";
import { freePort } from "./support/net.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually } from "./support/service.js";

const H = "/store_test/run";
let redis: TestRedis;
let store: Store;

beforeAll(async () => {
  redis = await startRedis();
  store = new Store(parseRedisUrl(redis.url));
  await store.connect();
});
afterAll(async () => {
  await store?.close();
  await redis?.destroy();
});
beforeEach(async () => {
  await redis.client.flushdb();
});

function newTask(overrides: Partial<Parameters<Store["createTask"]>[0]> = {}) {
  return store.createTask({
    handler: H,
    paramsJson: "{}",
    timeout: 180,
    resultTtl: 60,
    failureTtl: 60,
    ttl: undefined,
    maxAttempts: 1,
    maxQueued: 0,
    ip: "",
    uniqueKey: undefined,
    ...overrides,
  });
}

async function snapshot(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const key of (await redis.client.keys("*")).sort()) {
    out[key] = JSON.stringify(await redis.client.dump(key));
  }
  return out;
}

describe("create.lua", () => {
  it("refuses an id that already exists and changes nothing", async () => {
    const { id } = await newTask();
    const before = await snapshot();
    const reply = await store.connection.script(
      "create",
      [...keys.queueKeys(H), keys.expiryKey(H), keys.scheduledKey(H), keys.limitsKey(H), ...keys.groupKeys(H), keys.wipKey(H)],
      [
        H,
        keys.wakeChannel(H),
        keys.taskKeyPrefix(keys.handlerTag(H)),
        "0",
        "0",
        keys.groupQueuePrefix(H),
        "1", // a claim offered: a taken id is not claimed either
        "worker",
        "10000",
        keys.taskChannelPrefix(keys.handlerTag(H)),
        JSON.stringify({ id, data: '{"other":1}', timeout: "180", result_ttl: "60", ip: "" }),
      ],
    );
    expect(reply).toEqual([[id, CODES.create.ID_TAKEN], []]);
    expect(await snapshot()).toEqual(before);
  });
});

describe("fetch.lua", () => {
  it("skips a task deleted while queued and takes the next", async () => {
    const a = await newTask();
    const b = await newTask();
    await redis.client.del(keys.taskKey(a.id));
    const tasks = await store.fetchTasks(H, 10, "w:1:1", 10_000);
    expect(tasks.map((t) => t.id)).toEqual([b.id]);
    expect(await redis.client.exists(keys.taskKey(a.id))).toBe(0);
    expect(await redis.client.llen(keys.queueKey(H))).toBe(0);
  });
});

describe("finish.lua", () => {
  it("leaves alone the late end of an earlier run of the task by the same worker", async () => {
    const { id } = await newTask({ maxAttempts: 2 });
    const [first] = await store.fetchTasks(H, 1, "w:1:1", 1);
    // Its lease lapsed, the sweep took it back, and the same worker started it again (attempt 2).
    await new Promise((r) => setTimeout(r, 5));
    await store.sweep(H, 0);
    const [second] = await store.fetchTasks(H, 1, "w:1:1", 10_000);
    expect([first!.attempts, second!.attempts]).toEqual([1, 2]);
    const before = await snapshot();
    const late = { kind: "finished" as const, resultJson: '{"stat":"OK","data":1}', cost: 0.1, worker: "w:1:1" };
    expect(await store.finishTask(first!, late)).toBe("ignored");
    expect(await snapshot()).toEqual(before);
    expect(await store.finishTask(second!, late)).toBe("ended");
    expect(await redis.client.hget(keys.taskKey(id), "status")).toBe("finished");
  });

  it("never brings back a task deleted while it ran", async () => {
    const { id } = await newTask();
    const [task] = await store.fetchTasks(H, 1, "w:1:1", 10_000);
    await redis.client.del(keys.taskKey(id));
    const done = await store.finishTask(task!, {
      kind: "finished",
      resultJson: '{"stat":"OK","data":1}',
      cost: 0.1,
      worker: "w:1:1",
    });
    expect(done).toBe("ignored");
    expect(await redis.client.exists(keys.taskKey(id))).toBe(0);
    expect(await redis.client.zcard(keys.wipKey(H))).toBe(0);
  });

  it("leaves alone a task that another worker now runs, and its lease", async () => {
    const { id } = await newTask();
    const [task] = await store.fetchTasks(H, 1, "w:1:1", 10_000);
    await redis.client.hset(keys.taskKey(id), "handle_worker", "w:2:2");
    const before = await snapshot();
    const done = await store.finishTask(task!, {
      kind: "failed",
      resultJson: '{"stat":"ERR_SERVER_EXCEPTION","error":"x"}',
      cost: 0.1,
      worker: "w:1:1",
    });
    expect(done).toBe("ignored");
    expect(await snapshot()).toEqual(before);
  });

  it("ends a task once: a second finish changes nothing", async () => {
    const { id } = await newTask();
    const [task] = await store.fetchTasks(H, 1, "w:1:1", 10_000);
    const outcome = {
      kind: "finished" as const,
      resultJson: '{"stat":"OK","data":1}',
      cost: 0.1,
      worker: "w:1:1",
    };
    expect(await store.finishTask(task!, outcome)).toBe("ended");
    const ttl = await redis.client.pttl(keys.taskKey(id));
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    const before = await redis.client.hgetall(keys.taskKey(id));
    expect(await store.finishTask(task!, { ...outcome, resultJson: '{"stat":"OK","data":2}' })).toBe("ignored");
    expect(await redis.client.hgetall(keys.taskKey(id))).toEqual(before);
  });
});

describe("sweep.lua", () => {
  it("after a reconnect, recovers a lapsed lease only once its connection has been up for a lease period and a reconnect delay (workers renew first)", async () => {
    const { id } = await newTask();
    await store.fetchTasks(H, 1, "w:1:1", 1); // a 1 ms lease: lapsed at once
    await new Promise((r) => setTimeout(r, 5));
    const leaseMs = 400;
    // The store's connection came back just now (the server closed it): no recovery yet.
    await redis.client.client("KILL", "TYPE", "normal", "SKIPME", "yes");
    await eventually(() =>
      store.connection.ping().then(
        () => true,
        () => false,
      ),
    );
    const early = await store.sweep(H, leaseMs);
    expect(early.recovered + early.lost).toBe(0);
    expect(await redis.client.zscore(keys.wipKey(H), id)).not.toBeNull();
    // One lease period later (and the longest reconnect delay of any other connection, 2 s),
    // nobody renewed it: the worker is gone, the task is taken back.
    await new Promise((r) => setTimeout(r, leaseMs + 2000));
    const late = await store.sweep(H, leaseMs);
    expect(late.lost).toBe(1);
    expect(await redis.client.hget(keys.taskKey(id), "status")).toBe("failed");
  });
});

describe("cancel.lua with finish.lua and sweep.lua", () => {
  it("a started task whose cancel was asked for ends canceled: when its worker records a failure, or when the sweep finds it lost", async () => {
    const a = await newTask();
    const b = await newTask();
    const [ta, tb] = await store.fetchTasks(H, 2, "w:1:1", 1); // 1 ms leases
    expect(await store.cancelTask(ta!)).toBe("signaled");
    expect(await store.cancelTask(tb!)).toBe("signaled");
    expect(await redis.client.hget(keys.taskKey(a.id), "status")).toBe("started");

    // a: its worker saw the handler fail (the failure raced the cancel): canceled, not failed.
    const failed = { kind: "failed" as const, resultJson: '{"stat":"ERR_SERVER_EXCEPTION","error":"x"}', cost: 0.1 };
    expect(await store.finishTask(ta!, { ...failed, worker: "w:1:1", retryInMs: 0 })).toBe("canceled");
    expect(await redis.client.hget(keys.taskKey(a.id), "status")).toBe("canceled");
    expect(JSON.parse((await redis.client.hget(keys.taskKey(a.id), "result"))!).stat).toBe("ERR_CANCELED");

    // b: its worker is gone; once the lease grace has passed, the sweep ends it canceled.
    await new Promise((r) => setTimeout(r, 60));
    const swept = await store.sweep(H, 50);
    expect(swept.lost).toBe(1);
    expect(await redis.client.hget(keys.taskKey(b.id), "status")).toBe("canceled");
    expect(await redis.client.hexists(keys.taskKey(b.id), "cancel_requested")).toBe(0);
    expect(await redis.client.zcard(keys.wipKey(H))).toBe(0);
    // Nothing left to cancel, and a second cancel says so.
    expect(await store.cancelTask(tb!)).toBe("already_canceled");
  });
});

describe("retry.lua", () => {
  it("runs again a task that had expired in its queue (its queue deadline is not kept)", async () => {
    const { id } = await newTask({ ttl: 0.01, maxAttempts: 1 });
    await new Promise((r) => setTimeout(r, 30));
    expect(await store.fetchTasks(H, 1, "w:1:1", 10_000)).toEqual([]); // expired on fetch
    expect(JSON.parse((await redis.client.hget(keys.taskKey(id), "result"))!).stat).toBe("ERR_MSG_EXPIRED");
    expect((await store.retryTask((await store.getTask(id))!)).kind).toBe("queued");
    const [again] = await store.fetchTasks(H, 1, "w:1:1", 10_000);
    expect(again?.id).toBe(id);
    expect(again?.status).toBe("started");
  });
});

describe("Connection.call", () => {
  it("says Redis is unavailable only when it is: a bug in an operation stays the error it is", async () => {
    const bug = await store.connection
      .call(async () => {
        const reply = (await store.connection.redis.get("mq:no-such-key")) as unknown as { length: number } | null;
        return reply!.length; // null: a TypeError
      })
      .catch((err: unknown) => err);
    expect(bug).toBeInstanceOf(TypeError);
    // A refused command (not connected) is StoreUnavailableError, for comparison.
    const other = new Store(parseRedisUrl(`redis://127.0.0.1:${await freePort()}/0?socket_timeout=1`));
    try {
      const away = await other.connection.call(() => other.connection.redis.get("x")).catch((err: unknown) => err);
      expect(away).toBeInstanceOf(StoreUnavailableError);
    } finally {
      await other.close();
    }
  });
});
