/**
 * Client entry (`import { createTaskClient } from "baichuan/client"`): the generated TaskService
 * types and a helper that builds a typed client for a server URL.
 *
 *   const client = createTaskClient("http://127.0.0.1:8585");
 *   const { taskId } = await client.createTask({ handler: "/demo_api/ping", params: {} });
 *   for await (const { task } of client.watchTask({ taskId })) console.log(task?.status);
 */
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { TaskService } from "../gen/baichuan/v1/task_pb.js";

export { Code, ConnectError } from "@connectrpc/connect";
export * from "../gen/baichuan/v1/task_pb.js";

export interface TaskClientOptions {
  /** Wire protocol (default: "connect"). */
  protocol?: "connect" | "grpc" | "grpc-web";
  /** HTTP version; gRPC always uses HTTP/2 (default: "2"). */
  httpVersion?: "1.1" | "2";
  /** Binary protobuf instead of JSON, for Connect and gRPC-Web (default: true). */
  binary?: boolean;
  /** Interceptors, for example to add an authorization header. */
  interceptors?: Interceptor[];
}

export type TaskClient = Client<typeof TaskService>;

/** A typed TaskService client for `baseUrl` (for example `http://127.0.0.1:8585`). */
export function createTaskClient(baseUrl: string, options: TaskClientOptions = {}): TaskClient {
  const { protocol = "connect", httpVersion = "2", binary = true, interceptors = [] } = options;
  const transport =
    protocol === "grpc"
      ? // Refuse oversized messages locally: a server refusal would cost the HTTP/2 session.
        createGrpcTransport({ baseUrl, interceptors, writeMaxBytes: 1024 * 1024 + 64 * 1024 })
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, httpVersion, useBinaryFormat: binary, interceptors })
        : createConnectTransport({ baseUrl, httpVersion, useBinaryFormat: binary, interceptors });
  return createClient(TaskService, transport);
}
