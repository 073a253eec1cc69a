/**
 * Debian's Python 3 with grpcio (python3-grpcio, python3-grpc-tools), for tests that call the
 * service from a client this project did not write.
 */
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export const PYTHON = "/usr/bin/python3";

/** Run a command; resolves with its output, rejects when it fails. */
export const exec = promisify(execFile);

/** Generate the Python modules of proto/baichuan/v1/task.proto into a new temporary directory; resolves with it. */
export async function pythonStubs(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "baichuan-py-"));
  await exec(PYTHON, [
    "-m",
    "grpc_tools.protoc",
    "-I",
    "proto",
    `--python_out=${dir}`,
    `--grpc_python_out=${dir}`,
    "proto/baichuan/v1/task.proto",
  ]);
  return dir;
}
