/**
 * No request takes the process down. The real binary (`npm start`'s command) as a child process,
 * called over the network on every legacy URL with JSON nested far deeper than any limit, and
 * synchronous handler calls whose answers are no JSON (circular, BigInt, a throwing toJSON, nested
 * too deep) or whose errors are hostile values; after each, the process must still be alive and
 * serving.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/net.js";
import { type ServiceProcess, startProcess } from "./support/process.js";
import { startRedis, type TestRedis } from "./support/redis.js";

/** Handlers whose answers cannot be written as JSON, or that throw what no one expects. */
const HOSTILE_HANDLERS = `
export function circular() { const a = { b: 1 }; a.self = a; return a; }
export function bigint() { return { n: 10n }; }
export function tojson() { return { x: { toJSON() { throw new Error("no JSON for you"); } } }; }
export function deep() { let v = {}; for (let i = 0; i < 200000; i++) v = { v }; return v; }
export function deep_array() { let v = []; for (let i = 0; i < 200000; i++) v = [v]; return { data: v }; }
export function getter() { return Object.defineProperty({}, "boom", { enumerable: true, get() { throw new Error("getter"); } }); }
export function proxy_error() {
  throw new Proxy({}, { get() { throw new Error("trap"); }, getPrototypeOf() { throw new Error("trap"); }, ownKeys() { throw new Error("trap"); } });
}
export function deep_error() { let v = {}; for (let i = 0; i < 200000; i++) v = { v }; throw v; }
export function bigint_error() { throw 10n; }
export function cyclic_error() { const e = new Error("cyclic"); e.self = e; e.cause = e; throw e; }
`;

let redis: TestRedis;
let svc: ServiceProcess;
let base: string;

beforeAll(async () => {
  redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), "baichuan-hostile-"));
  writeFileSync(
    join(dir, "demo_api.mjs"),
    `export * from ${JSON.stringify(pathToFileURL(resolve("handlers/demo_api.ts")).href)};\n`,
  );
  writeFileSync(join(dir, "hostile.mjs"), HOSTILE_HANDLERS);
  const port = await freePort();
  svc = startProcess({ BAICHUAN_REDIS_URL: redis.url, BAICHUAN_PORT: String(port), BAICHUAN_HANDLERS_DIR: dir });
  base = `http://127.0.0.1:${port}`;
  await svc.waitFor(/"worker started"/);
});
afterAll(async () => {
  svc?.kill("SIGKILL");
  await redis?.destroy();
});

/** `depth` arrays, one in the other. */
const nested = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;

async function post(path: string, body: string): Promise<{ status: number; json: any }> {
  const res = await fetch(base + path, { method: "POST", body });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) };
}

/** The process still runs, says it is healthy and answers a synchronous call and a task round trip. */
async function expectAlive(): Promise<void> {
  expect(svc.child.exitCode).toBeNull();
  expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ stat: "OK" });
  expect((await post("/demo_api/hello", '{"name":"still here"}')).json).toEqual({ stat: "OK", message: "hello, still here" });
}

describe("JSON nested deeper than any limit, on every legacy URL", () => {
  // The reproduction: 10 KB of nesting 5,000 deep used to end the process (RangeError out of
  // JSON.stringify); 200,000 deep is 400 KB, under the body limit.
  for (const depth of [5_000, 200_000]) {
    const deep = nested(depth);
    const cases: Array<[string, string, string]> = [
      ["/demo_api/echo", `{"x":${deep}}`, "ERR_BAD_PARAMS"],
      ["/demo_api/echo", deep, "ERR_BAD_PARAMS"],
      ["/demo_api/hello", `{"name":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","params":{"x":${deep}}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":${deep},"params":{}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","params":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","timeout":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","result_ttl":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","max_attempts":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", `{"handler":"/demo_api/echo","msg_create_unique":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_create", deep, "ERR_BAD_PARAMS"],
      ["/baichuan/task_get", `{"task_id":${deep}}`, "ERR_BAD_PARAMS"],
      ["/baichuan/task_get", deep, "ERR_BAD_PARAMS"],
      ["/canghai/list_queues", `{"x":${deep}}`, "OK"],
      ["/canghai/list_workers", `{"x":${deep}}`, "OK"],
      ["/canghai/worker_info", `{"name":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/list_msgs", `{"queue":${deep},"state":"queued"}`, "ERR_BAD_PARAMS"],
      ["/canghai/list_msgs", `{"queue":"/demo_api/echo","state":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/list_msgs", `{"queue":"/demo_api/echo","state":"queued","size":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/list_msgs", `{"queue":"/demo_api/echo","state":"queued","cursor":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/msg_info", `{"task_id":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/delete_msg", `{"task_id":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/empty_queue", `{"queue":"/demo_api/echo","state":${deep}}`, "ERR_BAD_PARAMS"],
      ["/canghai/empty_queue", deep, "ERR_BAD_PARAMS"],
    ];
    it.each(cases)(`${depth} deep: POST %s %#`, async (path, body, stat) => {
      const { status, json } = await post(path, body);
      expect(status).toBe(200);
      expect(json.stat).toBe(stat);
      if (stat !== "OK") expect(typeof json.error).toBe("string");
      await expectAlive();
    });
  }

  it("a synchronous call takes the params CreateTask takes: 32 levels pass, 33 are refused, and so is more than the size limit", async () => {
    const params = (levels: number) => `{"x":${nested(levels - 1)}}`;
    expect((await post("/demo_api/echo", params(32))).json).toEqual({ stat: "OK", x: JSON.parse(nested(31)) });
    const deeper = (await post("/demo_api/echo", params(33))).json;
    expect(deeper).toMatchObject({ stat: "ERR_BAD_PARAMS", error: "params: is nested deeper than 32 levels" });
    // The body limit is the params limit plus 64 KiB: 1 MiB + 10 bytes of params get through it.
    const big = (await post("/demo_api/echo", JSON.stringify({ s: "x".repeat(1024 * 1024) }))).json;
    expect(big.stat).toBe("ERR_BAD_PARAMS");
    expect(big.error).toMatch(/^params: is \d+ bytes as JSON; the limit is 1048576$/);
    await expectAlive();
  });
});

describe("synchronous calls whose answer is no JSON, or whose handler throws a hostile value", () => {
  it.each([
    ["/hostile/circular"],
    ["/hostile/bigint"],
    ["/hostile/tojson"],
    ["/hostile/deep"],
    ["/hostile/deep_array"],
    ["/hostile/getter"],
    ["/hostile/proxy_error"],
    ["/hostile/deep_error"],
    ["/hostile/bigint_error"],
    ["/hostile/cyclic_error"],
  ])("%s answers ERR_SERVER_EXCEPTION and the process serves on", async (path) => {
    const { status, json } = await post(path, "{}");
    expect(status).toBe(200);
    expect(json.stat).toBe("ERR_SERVER_EXCEPTION");
    expect(typeof json.error).toBe("string");
    await expectAlive();
  });
});
