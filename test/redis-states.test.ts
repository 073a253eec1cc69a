/**
 * Clear answers when Redis is full or away: RESOURCE_EXHAUSTED (legacy ERR_REDIS_FULL) and one log
 * line per burst when Redis is at its maxmemory with noeviction; UNAVAILABLE in BaiChuan's own words
 * (never the client library's) while it is down; and a process started before its Redis listens at
 * once, answers 503 / NOT_SERVING, then serves when Redis comes.
 */
import { spawn } from "node:child_process";
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { createTaskClient } from "../src/client.js";
import { createLogger } from "../src/ops/log.js";
import { scheduledKey } from "../src/store/keys.js";
import { freePort, isListening } from "./support/net.js";
import { startProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";
import { eventually, failureOf, gate, postJson, startService, type TestService } from "./support/service.js";

/** Words of the client library (ioredis) that must never reach a caller. */
const LIBRARY_WORDS = /writeable|enableOfflineQueue|Connection is closed|ioredis|ECONNREFUSED|max retries|MaxRetries/i;

describe("Redis at its maxmemory with noeviction", () => {
  const HOLD = "/oom/hold";
  const hold = gate();
  let held = "";
  let redis: TestRedis;
  let svc: TestService;
  const lines: string[] = [];
  beforeAll(async () => {
    redis = await startRedis(["--maxmemory", "5mb", "--maxmemory-policy", "noeviction"]);
    const logger = createLogger("info", {}, (line) => void lines.push(line));
    svc = await startService({ redis, logger, handlers: { [HOLD]: () => hold.opened.then(() => ({ held: true })) } });
    // A task that runs through the burst below: it ends once Redis is full.
    held = (await svc.bc.enqueue(HOLD, {})).id;
    for await (const task of svc.bc.watch(held)) if (task.status === "started") break;
  });
  afterAll(async () => {
    await svc?.close();
    await redis?.destroy();
  });

  it("answers RESOURCE_EXHAUSTED / ERR_REDIS_FULL saying so, and logs once per burst, not per refusal", async () => {
    const client = svc.clients.grpc;
    const started = Date.now();
    const big = "x".repeat(20_000);
    // Fill it with delayed tasks (no worker takes them) until it refuses.
    let refused: [Code | undefined, string] = [undefined, ""];
    let accepted = 0;
    for (let i = 0; i < 2000 && refused[0] === undefined; i++, accepted++) {
      refused = await failureOf(
        client.createTask({ handler: "/demo_api/echo", params: { i, big }, options: { delay: { seconds: 3600n } } }),
      );
    }
    expect(refused).toEqual([
      Code.ResourceExhausted,
      "Redis is out of memory (maxmemory reached, nothing evicted): nothing can be stored until memory is freed",
    ]);
    // Used memory hovers around the limit (requests' buffers come and go, and a write is refused
    // only while used > maxmemory): put the limit 2 MB under what is used, so every write below
    // is refused whatever the buffers do.
    const used = Number(/used_memory:(\d+)/.exec(await redis.client.info("memory"))![1]);
    await redis.client.config("SET", "maxmemory", String(used - 2 * 1024 * 1024));
    // A burst of 100 more, over every path.
    const burst = await Promise.all(
      Array.from({ length: 50 }, (_, i) => failureOf(client.createTask({ handler: "/demo_api/echo", params: { i, big } }))),
    );
    expect(new Set(burst.map(([code]) => code))).toEqual(new Set([Code.ResourceExhausted]));
    const legacy = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        postJson(svc.baseUrl, "/baichuan/task_create", { handler: "/demo_api/echo", params: { i, big } }),
      ),
    );
    expect(new Set(legacy.map((r) => r.json.stat))).toEqual(new Set(["ERR_REDIS_FULL"]));
    expect(legacy[0]!.json.error).toMatch(/^Redis is out of memory/);
    // The log: access lines, and the first refusal, then at most one count per 10 s.
    const others = lines.filter((l) => !l.includes('"msg":"access"') && !l.includes('"msg":"worker started"'));
    expect(others.length).toBeGreaterThanOrEqual(1);
    expect(others.length).toBeLessThanOrEqual(1 + Math.ceil((Date.now() - started) / 10_000));
    expect(others[0]).toContain("out of memory");
    expect(others.join("\n")).not.toMatch(/stack|\\n\s+at /);
    // Reads still work, and the service is healthy.
    expect((await fetch(`${svc.baseUrl}/healthz`)).status).toBe(200);
    console.log(
      `[figures] maxmemory 5mb noeviction: ${accepted - 1} creates of 20 KB accepted, then 101 refused (RESOURCE_EXHAUSTED / ERR_REDIS_FULL); ${others.length} log line(s) besides access lines`,
    );
  });

  it("work it holds goes on: a running task ends, queued ones can be canceled and deleted", async () => {
    // Still full (the test above left maxmemory under the memory in use).
    expect(await failureOf(svc.clients.grpc.createTask({ handler: "/demo_api/ping" }))).toEqual([
      Code.ResourceExhausted,
      expect.stringMatching(/out of memory/),
    ]);
    hold.open();
    expect(await svc.bc.wait(held, { timeoutMs: 60_000 })).toMatchObject({ status: "finished", result: { held: true } });
    // The delayed tasks that filled it: one canceled, one deleted (which frees memory).
    const [first, second] = await redis.client.zrange(scheduledKey("/demo_api/echo"), 0, 1);
    const { task } = await svc.clients.grpc.cancelTask({ taskId: first! });
    expect(task?.status).toBe(TaskStatus.CANCELED);
    expect((await svc.clients.grpc.deleteTask({ taskId: second! })).deleted).toBe(true);
  });
});

describe("Redis down: errors say so in BaiChuan's words", () => {
  it("RPCs answer UNAVAILABLE and legacy URLs ERR_REDIS_UNAVAILABLE, without the client library's messages", async () => {
    const svc = await startService();
    try {
      await svc.redis.stop();
      await eventually(async () => (await fetch(`${svc.baseUrl}/healthz`)).status === 503);
      for (const protocol of ["grpc", "connect-h1"] as const) {
        const client = svc.clients[protocol];
        const calls: Array<() => Promise<unknown>> = [
          () => client.createTask({ handler: "/demo_api/ping" }),
          () => client.getTask({ taskId: "7D0B0000000000000000" }),
          // CreateTasks answers each item with its own error.
          async () => {
            const { results } = await client.createTasks({ tasks: [{ handler: "/demo_api/ping" }] });
            const { code, message } = results[0]!.error!;
            expect(code).toBe("unavailable");
            throw new ConnectError(message, Code.Unavailable);
          },
        ];
        for (const call of calls) {
          const [code, message] = await failureOf(call());
          expect(code).toBe(Code.Unavailable);
          expect(message).toMatch(/^Redis is unavailable/);
          expect(message).not.toMatch(LIBRARY_WORDS);
        }
      }
      for (const [path, body] of [
        ["/baichuan/task_create", { handler: "/demo_api/ping" }],
        ["/baichuan/task_get", { task_id: "7D0B0000000000000000" }],
      ] as const) {
        const { json } = await postJson(svc.baseUrl, path, body);
        expect(json.stat).toBe("ERR_REDIS_UNAVAILABLE");
        expect(json.error).toMatch(/^Redis is unavailable/);
        expect(json.error).not.toMatch(LIBRARY_WORDS);
      }
      const health = await (await fetch(`${svc.baseUrl}/healthz`)).json();
      expect(health).toEqual({ stat: "ERR_REDIS_UNAVAILABLE", error: "Redis is unavailable" });
    } finally {
      await svc.close();
    }
  }, 30_000);
});

describe("npm start with Redis away at start-up", () => {
  it("listens at once, answers 503 / UNAVAILABLE, then serves and runs tasks once Redis comes", async () => {
    const redisPort = await freePort();
    const port = await freePort();
    const t0 = Date.now();
    const proc = startProcess({ BAICHUAN_REDIS_URL: `redis://127.0.0.1:${redisPort}/0`, BAICHUAN_PORT: String(port) });
    let redis: ReturnType<typeof spawn> | undefined;
    try {
      await proc.waitFor(/"listening"/, 20_000);
      const down = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(down.status).toBe(503);
      const listened = Date.now() - t0;
      expect(await down.json()).toEqual({ stat: "ERR_REDIS_UNAVAILABLE", error: "Redis is unavailable" });
      const client = createTaskClient(`http://127.0.0.1:${port}`, { protocol: "grpc" });
      const [code, message] = await failureOf(client.createTask({ handler: "/demo_api/ping" }));
      expect(code).toBe(Code.Unavailable);
      expect(message).toBe("Redis is unavailable (not connected)");
      expect(proc.output()).not.toMatch(/\n\s+at /);

      const t1 = Date.now();
      redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: "ignore",
      });
      await eventually(() => isListening("127.0.0.1", redisPort, 100), 10_000);
      await proc.waitFor(/"worker started"/, 20_000);
      await eventually(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200, 10_000);
      const serving = Date.now() - t1;
      const { taskId } = await client.createTask({ handler: "/demo_api/hello", params: { name: "late" } });
      let last: unknown;
      for await (const { task } of client.watchTask({ taskId })) last = task?.result && toJson(ValueSchema, task.result);
      expect(last).toEqual({ message: "hello, late" });
      console.log(
        `[figures] Redis away at start-up: /healthz 503 ${listened} ms after the process started; 200 ${serving} ms after redis-server was started; a create then ran`,
      );
    } finally {
      proc.kill("SIGKILL");
      redis?.kill("SIGKILL");
    }
  }, 60_000);
});
