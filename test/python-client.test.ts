/**
 * Another language's client: Python stubs generated from proto/ with grpcio's protoc, calling the
 * real listener over gRPC (Debian's python3-grpcio and python3-grpc-tools).
 */
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startService, type TestService } from "./support/service.js";

const exec = promisify(execFile);
const PYTHON = "/usr/bin/python3";
let svc: TestService;
let generated: string;

beforeAll(async () => {
  generated = mkdtempSync(join(tmpdir(), "baichuan-py-"));
  await exec(PYTHON, [
    "-m",
    "grpc_tools.protoc",
    "-I",
    "proto",
    `--python_out=${generated}`,
    `--grpc_python_out=${generated}`,
    "proto/baichuan/v1/task.proto",
  ]);
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
