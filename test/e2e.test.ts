/**
 * The service as a user runs it: the real binary, configured by environment, called with the seed's
 * curl commands verbatim, `buf curl`, and stopped by a signal.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/net.js";
import { startProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";

const exec = promisify(execFile);
const sh = (script: string) => exec("sh", ["-c", script], { timeout: 120_000 });

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.destroy();
});

describe("npm start", () => {
  it("serves the seed's curl calls, buf curl, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const svc = startProcess({
      BAICHUAN_REDIS_URL: `${redis.url}?socket_timeout=2&socket_connect_timeout=0.2&retry_on_timeout=false`,
      BAICHUAN_PORT: String(port),
      BAICHUAN_WORKER: "yes", // every boolean setting takes 1/0, true/false, yes/no, on/off
    });
    try {
      await svc.waitFor(/"worker started"/);
      // The seed's two commands, verbatim but for the port.
      const created = await sh(
        `curl -s -d '{"handler":"/demo_api/ping", "params":{}}' "http://127.0.0.1:${port}/baichuan/task_create"`,
      );
      const body = JSON.parse(created.stdout);
      expect(body.stat).toBe("OK");
      const id: string = body.data.task_id;
      expect(id).toMatch(/^[0-9A-F]{20}$/);

      const got = await sh(`curl -s "http://127.0.0.1:${port}/baichuan/task_get?task_id=${id}"`);
      const info = JSON.parse(got.stdout);
      // Pickup is push-based and ping is instant, yet allow for a loaded machine: wait via WatchTask.
      if (info.stat !== "OK") {
        await sh(
          `node_modules/.bin/buf curl --schema proto --protocol grpc --http2-prior-knowledge -d '{"taskId":"${id}"}' http://127.0.0.1:${port}/baichuan.v1.TaskService/WatchTask`,
        );
      }
      const final = JSON.parse((await sh(`curl -s "http://127.0.0.1:${port}/baichuan/task_get?task_id=${id}"`)).stdout);
      expect(final).toMatchObject({
        stat: "OK",
        data: { pong: true },
        task_info: { origin: "/demo_api/ping", status: "finished" },
      });

      const viaBuf = await sh(
        `node_modules/.bin/buf curl --schema proto --protocol grpc --http2-prior-knowledge -d '{"taskId":"${id}"}' http://127.0.0.1:${port}/baichuan.v1.TaskService/GetTask`,
      );
      expect(JSON.parse(viaBuf.stdout).task).toMatchObject({ id, status: "TASK_STATUS_FINISHED", result: { pong: true } });

      svc.kill("SIGTERM");
      expect(await svc.exited).toBe(0);
      expect(svc.output()).toMatch(/"stopped"/);
      // A clean stop removes the worker's registration.
      expect(await redis.client.smembers("mq:workers")).toEqual([]);
    } finally {
      svc.kill("SIGKILL");
    }
  });

  it("splits into an API-only and a worker-only process sharing one Redis", async () => {
    const apiPort = await freePort();
    const api = startProcess({ BAICHUAN_REDIS_URL: redis.url, BAICHUAN_PORT: String(apiPort), BAICHUAN_WORKER: "0" });
    const worker = startProcess({ BAICHUAN_REDIS_URL: redis.url, BAICHUAN_API: "off", BAICHUAN_CONCURRENCY: "2" });
    try {
      await api.waitFor(/"listening"/);
      await worker.waitFor(/"worker started"/);
      // The API process has no handlers of its own: it knows /demo_api/echo from the live worker.
      const created = await fetch(`http://127.0.0.1:${apiPort}/baichuan/task_create`, {
        method: "POST",
        body: JSON.stringify({ handler: "/demo_api/echo", params: { via: "api" } }),
      });
      const id: string = ((await created.json()) as any).data.task_id;
      await sh(
        `node_modules/.bin/buf curl --schema proto --protocol connect -d '{"taskId":"${id}"}' http://127.0.0.1:${apiPort}/baichuan.v1.TaskService/WatchTask`,
      );
      const info = (await (await fetch(`http://127.0.0.1:${apiPort}/baichuan/task_get?task_id=${id}`)).json()) as any;
      expect(info).toMatchObject({ stat: "OK", data: { via: "api" } });
      expect(info.task_info.handle_worker).toMatch(new RegExp(`:0:${worker.child.pid}$`));
      // The API-only process runs no worker: its handlers are not served synchronously either.
      expect((await fetch(`http://127.0.0.1:${apiPort}/demo_api/ping`)).status).toBe(400);
    } finally {
      api.kill("SIGKILL");
      worker.kill("SIGKILL");
    }
  });

  // Every setting's checks are unit tests (test/unit/config.test.ts); here, one of each kind
  // (a number, a URL, a file) shows how the binary reports them.
  it.each([
    ["BAICHUAN_PORT", "eighty"],
    ["BAICHUAN_REDIS_URL", "http://localhost:6379"],
    ["BAICHUAN_TLS_CERT", "/nonexistent/cert.pem"],
  ])("refuses to start with %s=%s, naming the setting", async (name, value) => {
    const svc = startProcess({ BAICHUAN_REDIS_URL: redis.url, [name]: value });
    expect(await svc.exited).toBe(2);
    expect(svc.output()).toContain(`invalid configuration: ${name}`);
    expect(svc.output()).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("refuses to start when a handler module has an invalid name", async () => {
    const { mkdtempSync, writeFileSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(join(tmpdir(), "baichuan-handlers-"));
    writeFileSync(join(dir, "bad name.mjs"), "export function ping() { return 1 }\n");
    const svc = startProcess({ BAICHUAN_REDIS_URL: redis.url, BAICHUAN_PORT: "0", BAICHUAN_HANDLERS_DIR: dir });
    expect(await svc.exited).toBe(2);
    expect(svc.output()).toContain("invalid handler name");
  });

  it("waits for Redis with clear messages when it is down at start-up, then serves", async () => {
    const late = await startRedis();
    await late.stop();
    const port = await freePort();
    const svc = startProcess({ BAICHUAN_REDIS_URL: late.url, BAICHUAN_PORT: String(port) });
    try {
      await svc.waitFor(/"waiting for Redis"/, 90_000);
      expect(svc.output()).not.toMatch(/\n\s+at /);
      await late.restart();
      await svc.waitFor(/"worker started"/, 90_000);
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(await res.json()).toEqual({ stat: "OK" });
    } finally {
      svc.kill("SIGKILL");
      await late.destroy();
    }
  });

  it("starts a private redis-server when BAICHUAN_REDIS_URL is unset and nothing answers on 6379", async () => {
    // A fresh network namespace has nothing listening on 127.0.0.1:6379.
    const { mkdtempSync } = await import("node:fs");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const cwd = process.cwd();
    const work = mkdtempSync(join(tmpdir(), "baichuan-dev-"));
    const script = [
      "ip link set lo up",
      `cd ${work}`,
      `ln -s ${cwd}/node_modules node_modules && ln -s ${cwd}/src src && ln -s ${cwd}/gen gen && ln -s ${cwd}/handlers handlers && cp ${cwd}/package.json .`,
      `BAICHUAN_PORT=18585 node --import tsx src/app/main.ts > out.log 2>&1 &`,
      "pid=$!",
      "for i in $(seq 1 100); do grep -q 'worker started' out.log && break; sleep 0.1; done",
      `curl -s -d '{"handler":"/demo_api/ping", "params":{}}' http://127.0.0.1:18585/baichuan/task_create`,
      "echo",
      "head -3 out.log",
      'kill -TERM "$pid"; wait "$pid"',
      "ls .baichuan",
    ].join("\n");
    const { stdout } = await exec("unshare", ["-n", "sh", "-c", script], { timeout: 30_000 });
    expect(stdout).toMatch(/"stat":"OK","data":\{"task_id":"[0-9A-F]{20}"\}/);
    expect(stdout).toContain("started a private redis-server");
    expect(stdout).toMatch(/appendonly/);
  });
});
