/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) over the real listener: with a Connect
 * gRPC client, then with the real tool, `buf curl`, given no schema at all.
 */
import { execFile } from "node:child_process";
import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { REFLECTION_LIMITS } from "../src/api/reflection.js";
import { startService, type TestService } from "./support/service.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService();
});
afterAll(async () => {
  await svc?.close();
});

const SERVICES = [
  "baichuan.v1.AdminService",
  "baichuan.v1.ScheduleService",
  "baichuan.v1.TaskService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];
const TASK_IMPORTS = ["google/protobuf/duration.proto", "google/protobuf/struct.proto", "google/protobuf/timestamp.proto"];

type Question = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;
const listServices: Question = { messageRequest: { case: "listServices", value: "*" } };
const symbol = (name: string): Question => ({ messageRequest: { case: "fileContainingSymbol", value: name } });
const filename = (name: string): Question => ({ messageRequest: { case: "fileByFilename", value: name } });

/** Ask questions on one stream of `version`; the answers, and the error that ended the stream if any. */
async function ask(
  version: "v1" | "v1alpha",
  questions: Question[],
  baseUrl = svc.baseUrl,
  headers: Record<string, string> = {},
) {
  // v1alpha is v1 under another package name (same fields, same numbers), so the v1 types describe
  // both; each version is still called with its own schema.
  const service = version === "v1" ? v1.ServerReflection : (v1alpha.ServerReflection as unknown as typeof v1.ServerReflection);
  const client = createClient(service, createGrpcTransport({ baseUrl }));
  const answers: v1.ServerReflectionResponse[] = [];
  let error: ConnectError | undefined;
  try {
    for await (const answer of client.serverReflectionInfo(
      (async function* () {
        yield* questions;
      })(),
      { headers },
    ))
      answers.push(answer);
  } catch (err) {
    error = ConnectError.from(err);
  }
  return { answers, error };
}

/** The files of a file_descriptor_response, decoded (fails the test on any other answer). */
function filesOf(answer: v1.ServerReflectionResponse | undefined): FileDescriptorProto[] {
  expect(answer?.messageResponse.case).toBe("fileDescriptorResponse");
  const response = answer!.messageResponse.value as v1.FileDescriptorResponse;
  return response.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

/** The error code of an error_response (fails the test on any other answer). */
function errorOf(answer: v1.ServerReflectionResponse | undefined): { errorCode: number; errorMessage: string } {
  expect(answer?.messageResponse.case).toBe("errorResponse");
  const { errorCode, errorMessage } = answer!.messageResponse.value as v1.ErrorResponse;
  return { errorCode, errorMessage };
}

describe.each(["v1", "v1alpha"] as const)("grpc.reflection.%s.ServerReflection", (version) => {
  it("lists every service served, echoing the request and its host", async () => {
    const { answers, error } = await ask(version, [{ ...listServices, host: "baichuan.test" }]);
    expect(error).toBeUndefined();
    expect(answers).toHaveLength(1);
    expect(answers[0]!.$typeName).toBe(`grpc.reflection.${version}.ServerReflectionResponse`);
    expect(answers[0]!.validHost).toBe("baichuan.test");
    expect(answers[0]!.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
    expect(answers[0]!.messageResponse.case).toBe("listServicesResponse");
    const { service } = answers[0]!.messageResponse.value as v1.ListServiceResponse;
    expect(service.map((s) => s.name).sort()).toEqual(SERVICES);
  });

  it("answers baichuan.v1.TaskService with task.proto and every file it imports", async () => {
    const { answers } = await ask(version, [symbol("baichuan.v1.TaskService")]);
    const files = filesOf(answers[0]);
    expect(files[0]!.name).toBe("baichuan/v1/task.proto");
    expect(
      files
        .slice(1)
        .map((f) => f.name)
        .sort(),
    ).toEqual(TASK_IMPORTS);
    expect([...files[0]!.dependency].sort()).toEqual(TASK_IMPORTS);
    const taskService = files[0]!.service.find((s) => s.name === "TaskService");
    expect(taskService?.method.map((m) => m.name)).toEqual(
      expect.arrayContaining(["CreateTask", "CreateTasks", "GetTask", "WatchTask"]),
    );
    expect(taskService?.method.find((m) => m.name === "WatchTask")?.serverStreaming).toBe(true);
  });

  it("finds methods, messages, enums, nested enums, enum values and fields, and files by name", async () => {
    const questions: [Question, string][] = [
      [symbol("baichuan.v1.TaskService.GetTask"), "baichuan/v1/task.proto"],
      [symbol("baichuan.v1.Task"), "baichuan/v1/task.proto"],
      [symbol("baichuan.v1.Task.handler"), "baichuan/v1/task.proto"],
      [symbol("baichuan.v1.TaskStatus"), "baichuan/v1/task.proto"],
      [symbol("baichuan.v1.TASK_STATUS_FINISHED"), "baichuan/v1/task.proto"],
      [symbol("grpc.health.v1.Health.Watch"), "grpc/health/v1/health.proto"],
      [symbol("grpc.health.v1.HealthCheckResponse.ServingStatus"), "grpc/health/v1/health.proto"],
      [symbol("grpc.health.v1.HealthCheckResponse.SERVING"), "grpc/health/v1/health.proto"],
      [symbol("grpc.reflection.v1alpha.ServerReflection"), "grpc/reflection/v1alpha/reflection.proto"],
      [symbol("google.protobuf.Struct"), "google/protobuf/struct.proto"],
      [filename("google/protobuf/struct.proto"), "google/protobuf/struct.proto"],
      [filename("baichuan/v1/task.proto"), "baichuan/v1/task.proto"],
    ];
    const { answers, error } = await ask(
      version,
      questions.map(([q]) => q),
    );
    expect(error).toBeUndefined();
    expect(answers.map((a) => filesOf(a)[0]!.name)).toEqual(questions.map(([, file]) => file));
  });

  it("sends an imported file once per stream, the file asked for every time", async () => {
    const { answers } = await ask(version, [
      symbol("baichuan.v1.TaskService"),
      symbol("baichuan.v1.Task"),
      filename("google/protobuf/struct.proto"),
    ]);
    const [first, second, third] = answers.map((a) => filesOf(a).map((f) => f.name));
    expect(first?.[0]).toBe("baichuan/v1/task.proto");
    expect(first?.slice(1).sort()).toEqual(TASK_IMPORTS);
    expect(second).toEqual(["baichuan/v1/task.proto"]);
    expect(third).toEqual(["google/protobuf/struct.proto"]);
  });

  it("answers NOT_FOUND for unknown names and keeps the stream going", async () => {
    const { answers, error } = await ask(version, [
      symbol("baichuan.v1.NoSuchThing"),
      symbol("baichuan.v1.TaskService.NoSuchMethod"),
      filename("baichuan/v1/nothing.proto"),
      symbol("baichuan.v1.Task"),
    ]);
    expect(error).toBeUndefined();
    expect(errorOf(answers[0])).toEqual({ errorCode: Code.NotFound, errorMessage: 'no symbol named "baichuan.v1.NoSuchThing"' });
    expect(errorOf(answers[1]).errorCode).toBe(Code.NotFound);
    expect(errorOf(answers[1]).errorMessage).toContain("NoSuchMethod");
    expect(errorOf(answers[2])).toEqual({ errorCode: Code.NotFound, errorMessage: 'no file named "baichuan/v1/nothing.proto"' });
    expect(answers[3]!.originalRequest?.messageRequest.value).toBe("baichuan.v1.Task");
    expect(filesOf(answers[3])[0]!.name).toBe("baichuan/v1/task.proto");
  });

  it("has no extensions: NOT_FOUND for one, an empty list for a known message type", async () => {
    const { answers } = await ask(version, [
      {
        messageRequest: { case: "fileContainingExtension", value: { containingType: "baichuan.v1.Task", extensionNumber: 1000 } },
      },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "baichuan.v1.Task" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "baichuan.v1.NoSuchThing" } },
    ]);
    expect(errorOf(answers[0]).errorCode).toBe(Code.NotFound);
    expect(answers[1]!.messageResponse.case).toBe("allExtensionNumbersResponse");
    expect(answers[1]!.messageResponse.value).toMatchObject({ baseTypeName: "baichuan.v1.Task", extensionNumber: [] });
    expect(errorOf(answers[2]).errorCode).toBe(Code.NotFound);
  });

  it("answers INVALID_ARGUMENT for an over-long name or host and for an empty request, and goes on", async () => {
    const max = REFLECTION_LIMITS.maxNameLength;
    const { answers, error } = await ask(version, [
      symbol("x".repeat(max + 1)),
      { ...listServices, host: "h".repeat(max + 1) },
      {},
      symbol("x".repeat(max)), // at the limit: looked up, and not found
      listServices,
    ]);
    expect(error).toBeUndefined();
    expect(
      answers.map((a) =>
        a.messageResponse.case === "errorResponse" ? a.messageResponse.value.errorCode : a.messageResponse.case,
      ),
    ).toEqual([Code.InvalidArgument, Code.InvalidArgument, Code.InvalidArgument, Code.NotFound, "listServicesResponse"]);
  });

  it("ends a stream past its request limit with RESOURCE_EXHAUSTED", async () => {
    const { answers, error } = await ask(version, Array(REFLECTION_LIMITS.maxRequests + 1).fill(listServices));
    expect(answers).toHaveLength(REFLECTION_LIMITS.maxRequests);
    expect(error?.code).toBe(Code.ResourceExhausted);
  });
});

describe("buf curl, with no schema but the server's reflection", () => {
  /** Run `buf curl` (the devDependency); resolves with its exit code and output. */
  function bufCurl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    // Any attempt to fetch a schema from the network goes to a closed port and fails; loopback
    // addresses are never proxied, so the server is reached directly.
    const env = { ...process.env, HTTP_PROXY: "http://127.0.0.1:9", HTTPS_PROXY: "http://127.0.0.1:9", NO_PROXY: "" };
    return new Promise((resolve) => {
      execFile(
        "node_modules/.bin/buf",
        ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args],
        { env, timeout: 20_000 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
      );
    });
  }

  it("lists the services and the methods", async () => {
    const services = await bufCurl("--list-services", svc.baseUrl);
    expect({ code: services.code, stderr: services.stderr }).toEqual({ code: 0, stderr: "" });
    expect(services.stdout.trim().split("\n").sort()).toEqual(SERVICES);

    const methods = await bufCurl("--list-methods", svc.baseUrl);
    expect({ code: methods.code, stderr: methods.stderr }).toEqual({ code: 0, stderr: "" });
    expect(methods.stdout.trim().split("\n")).toEqual(
      expect.arrayContaining([
        "baichuan.v1.TaskService/CreateTask",
        "baichuan.v1.TaskService/CreateTasks",
        "baichuan.v1.TaskService/GetTask",
        "baichuan.v1.TaskService/WatchTask",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      ]),
    );
  });

  it.each(["grpc-v1", "grpc-v1alpha"])("calls GetTask, reading the schema by %s", async (reflectProtocol) => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/hello", params: { name: reflectProtocol } });
    await svc.bc.wait(taskId, { timeoutMs: 60_000 });
    const { code, stdout, stderr } = await bufCurl(
      "--reflect-protocol",
      reflectProtocol,
      "-d",
      JSON.stringify({ taskId }),
      `${svc.baseUrl}/baichuan.v1.TaskService/GetTask`,
    );
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    // The result, a google.protobuf.Value, is printed as plain JSON: struct.proto was resolved too.
    expect(JSON.parse(stdout).task).toMatchObject({
      id: taskId,
      handler: "/demo_api/hello",
      status: "TASK_STATUS_FINISHED",
      result: { message: `hello, ${reflectProtocol}` },
    });
  });

  it("tells a method the service lacks, having read the service by reflection", async () => {
    const { code, stderr } = await bufCurl(`${svc.baseUrl}/baichuan.v1.TaskService/NoSuchMethod`);
    expect(code).toBe(1); // a usage error: no RPC was sent
    expect(stderr).toContain('service "baichuan.v1.TaskService" contains no such method');
  });
});

describe("with bearer tokens configured", () => {
  const TOKEN = "reflection-test-token-0123456789";
  let secured: TestService;
  let open: TestService;
  beforeAll(async () => {
    secured = await startService({ redis: svc.redis, authTokens: [TOKEN], worker: false });
    open = await startService({ redis: svc.redis, authTokens: [TOKEN], reflectionOpen: true, worker: false });
  });
  afterAll(async () => {
    await open?.close();
    await secured?.close();
  });

  it.each(["v1", "v1alpha"] as const)("%s needs a token, as the API does (only health is open)", async (version) => {
    for (const headers of [{}, { authorization: "Bearer not-a-valid-token-000000" }]) {
      const { answers, error } = await ask(version, [listServices], secured.baseUrl, headers);
      expect(answers).toEqual([]);
      expect(error?.code).toBe(Code.Unauthenticated);
    }
    const { answers, error } = await ask(version, [listServices], secured.baseUrl, { authorization: `Bearer ${TOKEN}` });
    expect(error).toBeUndefined();
    expect(answers[0]?.messageResponse.case).toBe("listServicesResponse");
  });

  it.each(["v1", "v1alpha"] as const)("%s is open without a token with BAICHUAN_REFLECTION_OPEN", async (version) => {
    const { answers, error } = await ask(version, [listServices], open.baseUrl);
    expect(error).toBeUndefined();
    expect(answers[0]?.messageResponse.case).toBe("listServicesResponse");
  });
});
