/**
 * The Redis data layout, kept from the seed (see /work/shared/SEED-NOTES.md): which keys exist, their
 * types, the fields of a task hash in each state, expiry, the running set, the worker hash, and that
 * every key and channel of a handler lives in one Redis Cluster slot.
 *
 * Keys are read back from the server (KEYS, PUBSUB SHARDCHANNELS), not rebuilt with src/store/keys.ts,
 * so the test checks what is really stored.
 */
import { hostname } from "node:os";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import * as demo from "../handlers/demo_api.js";
import { BaiChuan } from "../src/engine/baichuan.js";
import { handlerTag, keySlot } from "../src/store/keys.js";
import type { WorkerOptions } from "../src/worker/worker.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually } from "./support/service.js";
import { msFromIso } from "./support/time.js";

/** `2025-05-25T05:25:01.375784Z`: UTC, microseconds. */
const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const COST_RE = /^\d+\.\d{6}$/;

const PING = "/demo_api/ping";
const SLEEP = "/demo_api/sleep";

let redis: TestRedis;
const open: BaiChuan[] = [];
let nextPort = 43_000;

beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((bc) => bc.close(500)));
});
afterAll(async () => {
  await redis?.destroy();
});

/** A fresh instance with the demo handlers loaded; no worker until `startWorker`. */
async function instance(url = redis.url): Promise<BaiChuan> {
  const bc = await BaiChuan.connect({ redis: url });
  open.push(bc);
  await bc.handlers.loadDirectory("handlers");
  return bc;
}

async function startWorker(bc: BaiChuan, options: WorkerOptions = {}): Promise<string> {
  return (await bc.startWorker({ port: nextPort++, ...options })).name;
}

async function keysAndTypes(client = redis.client): Promise<Record<string, string>> {
  const keys = (await client.keys("*")).sort();
  return Object.fromEntries(await Promise.all(keys.map(async (k) => [k, await client.type(k)] as const)));
}

/** The seed's task key: `mq:msg:{TAG}<rest of id>`, TAG being the id's first 4 characters. */
function seedTaskKey(id: string): string {
  return `mq:msg:{${id.slice(0, 4)}}${id.slice(4)}`;
}

describe("a queued task (no worker)", () => {
  it("is exactly a task hash, a queue list holding its id, and the queue in mq:queues", async () => {
    await redis.client.flushall();
    const bc = await instance();
    const before = Date.now();
    const { id } = await bc.enqueue(PING, { shard_id: 71148, app_name: "xx" }, {}, { ip: "10.1.2.3" });
    const tag = handlerTag(PING);
    expect(id.slice(0, 4)).toBe(tag);

    const queue = `mq:queue:{${tag}}${PING}`;
    expect(await keysAndTypes()).toEqual({
      [seedTaskKey(id)]: "hash",
      [queue]: "list",
      "mq:queues": "set",
    });
    expect(await redis.client.lrange(queue, 0, -1)).toEqual([id]);
    expect(await redis.client.smembers("mq:queues")).toEqual([queue]);

    const fields = await redis.client.hgetall(seedTaskKey(id));
    expect(Object.keys(fields).sort()).toEqual(
      ["origin", "status", "timeout", "ip", "created_at", "handle_worker", "data", "result_ttl", "attempts", "ver"].sort(),
    );
    // enqueued_at (equal to created_at), failure_ttl and max_attempts are stored only when they
    // differ from created_at and the defaults.
    expect(fields).toMatchObject({
      origin: PING,
      status: "queued",
      timeout: "180",
      ip: "10.1.2.3",
      handle_worker: "",
      result_ttl: "86400",
      attempts: "0",
      ver: "1",
    });
    expect(JSON.parse(fields.data!)).toEqual({ shard_id: 71148, app_name: "xx" });
    expect(fields.created_at).toMatch(TIME_RE);
    expect(await bc.getTask(id)).toMatchObject({ enqueuedAt: fields.created_at }); // read back from created_at
    // Stored times come from the monotonic clock, which may drift a little from Date.now().
    expect(msFromIso(fields.created_at)).toBeGreaterThanOrEqual(before - 1000);
    expect(msFromIso(fields.created_at)).toBeLessThanOrEqual(Date.now() + 1000);
    expect(await redis.client.ttl(seedTaskKey(id))).toBe(-1);
  });

  it.each([
    { option: { timeout: 5 }, fields: { timeout: "5" } },
    { option: { resultTtl: 900, failureTtl: 60 }, fields: { result_ttl: "900", failure_ttl: "60" } },
    { option: { ttl: 30 }, fields: { ttl: "30" } },
  ])("stores option $option as $fields", async ({ option, fields }) => {
    const bc = await instance();
    const { id } = await bc.enqueue(PING, {}, option);
    expect(await redis.client.hgetall(seedTaskKey(id))).toMatchObject(fields);
  });

  it("a queue ttl adds drop_at (epoch ms of the deadline); a unique create adds a unique key naming the task", async () => {
    const bc = await instance();
    const before = Date.now();
    const { id } = await bc.enqueue("/demo_api/echo", { u: 1 }, { ttl: 30, unique: true });
    const fields = await redis.client.hgetall(seedTaskKey(id));
    expect(Number(fields.drop_at)).toBeGreaterThanOrEqual(before + 30_000);
    expect(Number(fields.drop_at)).toBeLessThanOrEqual(Date.now() + 30_000);
    const tag = handlerTag("/demo_api/echo");
    expect(fields.unique).toMatch(new RegExp(`^mq:unique:\\{${tag}\\}/demo_api/echo:[0-9a-f]{40}$`));
    expect(await redis.client.type(fields.unique!)).toBe("string");
    expect(await redis.client.get(fields.unique!)).toBe(id);
  });
});

describe("a task that ran", () => {
  it("gains started_at, ended_at, cost, result; is finished; expires; leaves no queue or running entry", async () => {
    await redis.client.flushall();
    const bc = await instance();
    const { id } = await bc.enqueue(PING, { a: 1 });
    const worker = await startWorker(bc);
    await bc.wait(id, { timeoutMs: 60_000 });

    const key = seedTaskKey(id);
    const fields = await redis.client.hgetall(key);
    expect(Object.keys(fields).sort()).toEqual(
      [
        "origin",
        "status",
        "timeout",
        "ip",
        "created_at",
        "handle_worker",
        "data",
        "result_ttl",
        "attempts",
        "ver",
        "started_at",
        "ended_at",
        "cost",
        "result",
      ].sort(),
    );
    expect(fields).toMatchObject({ status: "finished", handle_worker: worker, origin: PING, data: '{"a":1}', ver: "3" });
    expect(JSON.parse(fields.result!)).toEqual({ stat: "OK", data: { pong: true } });
    expect(fields.cost).toMatch(COST_RE);
    for (const f of ["created_at", "started_at", "ended_at"]) expect(fields[f], f).toMatch(TIME_RE);
    expect(msFromIso(fields.started_at)).toBeGreaterThanOrEqual(msFromIso(fields.created_at));
    expect(msFromIso(fields.ended_at)).toBeGreaterThanOrEqual(msFromIso(fields.started_at));

    const ttl = await redis.client.ttl(key);
    expect(ttl).toBeGreaterThan(86_400 - 5);
    expect(ttl).toBeLessThanOrEqual(86_400);

    const tag = handlerTag(PING);
    expect(await redis.client.exists(`mq:queue:{${tag}}${PING}`)).toBe(0); // empty list
    expect(await redis.client.exists(`mq:wip:{${tag}}${PING}`)).toBe(0); // empty zset
  });

  it("a failed task stores {stat, error} and expires after failure_ttl", async () => {
    const bc = await instance();
    await startWorker(bc);
    const { id } = await bc.enqueue("/demo_api/fail", { message: "nope" }, { failureTtl: 120 });
    await bc.wait(id, { timeoutMs: 60_000 });
    const fields = await redis.client.hgetall(seedTaskKey(id));
    expect(fields.status).toBe("failed");
    expect(JSON.parse(fields.result!)).toEqual({ stat: "ERR_SERVER_EXCEPTION", error: "nope" });
    expect(fields.cost).toMatch(COST_RE);
    expect(fields.ended_at).toMatch(TIME_RE);
    const ttl = await redis.client.ttl(seedTaskKey(id));
    expect(ttl).toBeGreaterThan(115);
    expect(ttl).toBeLessThanOrEqual(120);
  });
});

describe("the running set mq:wip:{TAG}<handler>", () => {
  it.each([
    { timeout: undefined, leaseMs: 10_000 },
    { timeout: 7, leaseMs: 3_000 },
  ])(
    "holds a running task with score = its lease deadline (start + $leaseMs ms, renewed), and empties after",
    async ({ timeout, leaseMs }) => {
      const bc = await instance();
      const worker = await startWorker(bc, leaseMs === 10_000 ? {} : { leaseMs });
      const { id } = await bc.enqueue(SLEEP, { seconds: 0.4 }, timeout === undefined ? {} : { timeout });
      await eventually(async () => (await redis.client.hget(seedTaskKey(id), "status")) === "started");

      const wip = `mq:wip:{${handlerTag(SLEEP)}}${SLEEP}`;
      expect(await redis.client.type(wip)).toBe("zset");
      expect(await redis.client.zrange(wip, 0, -1)).toEqual([id]);
      const fields = await redis.client.hgetall(seedTaskKey(id));
      const score = Number(await redis.client.zscore(wip, id));
      const startedMs = msFromIso(fields.started_at);
      expect(score - startedMs).toBeGreaterThanOrEqual(leaseMs - 1000);
      expect(score - startedMs).toBeLessThanOrEqual(leaseMs + 2000);

      // While started: worker and start time set, nothing of the end yet, no expiry.
      expect(fields).toMatchObject({ status: "started", handle_worker: worker, ver: "2" });
      expect(fields.started_at).toMatch(TIME_RE);
      for (const f of ["ended_at", "result"]) expect(fields[f], f).toBeUndefined();
      expect(await redis.client.ttl(seedTaskKey(id))).toBe(-1);

      await bc.wait(id, { timeoutMs: 60_000 });
      expect(await redis.client.zcard(wip)).toBe(0);
    },
  );
});

describe("the worker's hash", () => {
  it("mq:worker:<host:port:pid> holds birth, last_heartbeat, queues, pid, hostname, state; mq:workers names it", async () => {
    const bc = await instance();
    const port = nextPort++;
    const name = (await bc.startWorker({ port })).name;
    expect(name).toBe(`${hostname()}:${port}:${process.pid}`);

    const key = `mq:worker:${name}`;
    expect(await redis.client.type(key)).toBe("hash");
    const fields = await redis.client.hgetall(key);
    for (const f of ["birth", "last_heartbeat", "queues", "pid", "hostname", "state"]) expect(fields, f).toHaveProperty(f);
    expect(fields.birth).toMatch(TIME_RE);
    expect(fields.last_heartbeat).toMatch(TIME_RE);
    expect(fields.pid).toBe(String(process.pid));
    expect(fields.hostname).toBe(hostname());
    expect(fields.queues!.split(",").sort()).toEqual(bc.handlers.names());
    expect(fields.queues!.split(",")).toContain(PING);
    expect(await redis.client.sismember("mq:workers", name)).toBe(1);
    // It lives only while heartbeats renew it.
    expect(await redis.client.ttl(key)).toBeGreaterThan(0);

    // A clean stop removes both.
    await bc.close(500);
    open.splice(open.indexOf(bc), 1);
    expect(await redis.client.exists(key)).toBe(0);
    expect(await redis.client.sismember("mq:workers", name)).toBe(0);
  });
});

describe("cluster slots", () => {
  // CLUSTER KEYSLOT needs a cluster-enabled server ("This instance has cluster support disabled"
  // otherwise), so one is started to check the local computation.
  let cluster: TestRedis;
  beforeAll(async () => {
    cluster = await startRedis(["--cluster-enabled", "yes"]);
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  it("CLUSTER KEYSLOT is refused by the plain test server, and keySlot matches a cluster-enabled one", async () => {
    await expect(redis.client.call("CLUSTER", "KEYSLOT", "foo")).rejects.toThrow(/cluster support disabled/);
    for (const key of ["foo", "somekey", "{user1000}.following", "a{}b", "{}{x}", "mq:msg:{ABCD}0123456789ABCDEF"]) {
      expect(keySlot(key), key).toBe(await cluster.client.call("CLUSTER", "KEYSLOT", key));
    }
  });

  it("every key and channel of a handler and its tasks is in one slot", async () => {
    await redis.client.flushall();
    // Only /demo_api/sleep, so every channel on the server is this handler's.
    const bc = await BaiChuan.connect({ redis: redis.url });
    open.push(bc);
    bc.register(SLEEP, demo.sleep);
    // One slot, so a second task stays queued while the first runs.
    const worker = await startWorker(bc, { concurrency: 1 });
    // Every kind of key: finished, running (so the wip zset exists), queued with ttl and unique, watched.
    const done = await bc.enqueue(SLEEP, { seconds: 0 });
    await bc.wait(done.id, { timeoutMs: 60_000 });
    const running = await bc.enqueue(SLEEP, { seconds: 1 }, { unique: true, ttl: 60 });
    await eventually(async () => (await redis.client.hget(seedTaskKey(running.id), "status")) === "started");
    const queued = await bc.enqueue(SLEEP, { seconds: 0.1 }, { unique: true, ttl: 60 });
    const controller = new AbortController();
    const watch = bc.watch(queued.id, controller.signal);
    await watch.next();

    const global = new Set(["mq:queues", "mq:workers", `mq:worker:${worker}`]);
    const keys = (await redis.client.keys("*")).filter((k) => !global.has(k));
    const channels = (await redis.client.call("PUBSUB", "SHARDCHANNELS")) as string[];
    const kinds = new Set([...keys, ...channels].map((k) => k.split(":")[1]));
    expect([...kinds].sort()).toEqual(["events", "expiry", "msg", "queue", "stats", "unique", "wake", "wip"]);

    const tag = handlerTag(SLEEP);
    for (const k of [...keys, ...channels]) expect(k, k).toContain(`{${tag}}`);
    const slots = new Set([...keys, ...channels].map(keySlot));
    expect(slots.size).toBe(1);
    expect([...slots][0]).toBe(await cluster.client.call("CLUSTER", "KEYSLOT", keys[0]!));

    controller.abort();
    await watch.next();
    await bc.wait(running.id, { timeoutMs: 60_000 });
    await bc.wait(queued.id, { timeoutMs: 60_000 });
  });

  it("runs create, fetch and finish on a one-node Redis Cluster (the scripts' keys share a slot)", async () => {
    await cluster.client.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383");
    await eventually(async () => ((await cluster.client.call("CLUSTER", "INFO")) as string).includes("cluster_state:ok"), 60_000);
    const bc = await instance(cluster.url);
    await startWorker(bc);
    const ids = await Promise.all(
      [PING, "/demo_api/echo", "/demo_api/fail"].map(async (h) => (await bc.enqueue(h, { h }, { unique: true, ttl: 60 })).id),
    );
    const tasks = await Promise.all(ids.map((id) => bc.wait(id, { timeoutMs: 60_000 })));
    expect(tasks.map((t) => t.status)).toEqual(["finished", "finished", "failed"]);
    expect(tasks[1]!.result).toEqual({ h: "/demo_api/echo" });
  });
});
