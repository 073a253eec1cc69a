/**
 * Another language's client: Python stubs generated from proto/ with grpcio's protoc, calling the
 * real listener over gRPC (Debian's python3-grpcio and python3-grpc-tools).
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { exec, PYTHON, pythonStubs } from "./support/python.js";
import { startService, type TestService } from "./support/service.js";

let svc: TestService;
let generated: string;

beforeAll(async () => {
  generated = await pythonStubs();
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

it("a Python gRPC client creates, watches and reads a task, and gets NOT_FOUND for an unknown one", async () => {
  const { stdout } = await exec(PYTHON, ["test/fixtures/python_client.py", generated, `127.0.0.1:${svc.server.port}`], {
    timeout: 30_000,
  });
  const out = JSON.parse(stdout);
  expect(out.task_id).toMatch(/^[0-9A-F]{20}$/);
  expect(out.statuses.at(-1)).toBe("TASK_STATUS_FINISHED");
  expect(out.result).toEqual({ message: "hello, python" });
  expect(out.missing).toBe("NOT_FOUND");
});
