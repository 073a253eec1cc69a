/**
 * The package's client entry, used by name (`baichuan/client`) from another program, as a service
 * depending on this package would: type-checked against the built declarations, then run.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startService, type TestService } from "./support/service.js";

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
