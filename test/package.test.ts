/**
 * The package as built (`npm run build`, which `npm ci` runs through `prepare`) and as users run it:
 * `npm start` (dist/, the built demo handlers) stopped by SIGTERM sent to npm, the `baichuan`
 * binary, and the client entry used by name (`baichuan/client`) from another program, as a service
 * depending on this package would: type-checked against the built declarations, then run.
 * The one build is here: other test files run the sources.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, isListening } from "./support/net.js";
import { startProcess } from "./support/process.js";
import { startRedis } from "./support/redis.js";
import { eventually, getJson, postJson, startService, type TestService } from "./support/service.js";

const exec = promisify(execFile);
let svc: TestService;
// The build alone takes 20-40 s on a loaded 2-core machine: more than the default hook timeout.
beforeAll(async () => {
  await exec("npm", ["run", "build"], { timeout: 120_000 });
  svc = await startService();
}, 150_000);
afterAll(async () => {
  await svc?.close();
});

/** Whether a process of this pid is there (any user's). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

describe("npm start", () => {
  it("runs the built service: listening, a legacy task_create of /demo_api/echo finishes; SIGTERM to npm stops it (exit 0, port closed)", async () => {
    // A Redis of its own: the task must be run by this process's worker, not by svc's.
    const redis = await startRedis();
    const port = await freePort();
    const npm = startProcess({ BAICHUAN_REDIS_URL: redis.url, BAICHUAN_PORT: String(port) }, ["npm", "start"]);
    let server: number | undefined;
    try {
      await npm.waitFor(/"msg":"listening"/);
      await npm.waitFor(/"msg":"worker started"/);
      expect(npm.output()).toContain("node dist/src/app/main.js");
      expect(npm.output()).toMatch(/"dir":"dist\/handlers","handlers":\[[^\]]*"\/demo_api\/echo"/);
      // The worker is named host:port:pid: the server's process, which is not npm's.
      server = Number(/"worker":"[^"]*:(\d+)","handlers"/.exec(npm.output())?.[1]);
      expect(server).toBeGreaterThan(0);
      expect(server).not.toBe(npm.child.pid);

      const base = `http://127.0.0.1:${port}`;
      const created = await postJson(base, "/baichuan/task_create", { handler: "/demo_api/echo", params: { from: "npm start" } });
      expect(created.json).toMatchObject({ stat: "OK", data: { task_id: expect.stringMatching(/^[0-9A-F]{20}$/) } });
      const got = await eventually(async () => {
        const { json } = await getJson(base, `/baichuan/task_get?task_id=${created.json.data.task_id}`);
        return json.stat === "OK" ? json : undefined;
      }, 60_000);
      expect(got.data).toEqual({ from: "npm start" });
      expect(got.task_info.status).toBe("finished");

      npm.kill("SIGTERM");
      expect(await npm.exited).toBe(0);
      expect(npm.output()).toMatch(/"signal":"SIGTERM","msg":"shutting down"/);
      expect(npm.output()).toMatch(/"msg":"stopped"/);
      expect(alive(server)).toBe(false);
      expect(await isListening("127.0.0.1", port)).toBe(false);
    } finally {
      npm.kill("SIGKILL");
      if (server !== undefined && alive(server)) process.kill(server, "SIGKILL");
      await redis.destroy();
    }
  });
});

it("the built binary answers --help", async () => {
  const { stdout, stderr } = await exec("node", ["bin/baichuan.mjs", "--help"], { timeout: 60_000 });
  expect(stderr).toBe("");
  expect(stdout).toMatch(/^ {2}create HANDLER\s/m);
});

it("type-checks a consumer against the built declarations", async () => {
  await exec("node_modules/.bin/tsc", ["-p", "test/fixtures/tsconfig.json"], { timeout: 60_000 });
});

it.each(["connect", "grpc", "grpc-web"])("creates and watches a task through baichuan/client over %s", async (protocol) => {
  const { stdout } = await exec("node", ["--import", "tsx", "test/fixtures/consumer.ts", svc.baseUrl, protocol], {
    timeout: 20_000,
  });
  const out = JSON.parse(stdout);
  expect(out.taskId).toMatch(/^[0-9A-F]{20}$/);
  expect(out.finished).toBe(true);
  expect(out.params).toEqual({ from: "consumer" });
});
