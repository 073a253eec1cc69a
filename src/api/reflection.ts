/**
 * gRPC server reflection, `grpc.reflection.v1.ServerReflection` and its older twin
 * `grpc.reflection.v1alpha.ServerReflection`: tools such as `buf curl` and grpcurl read the schema
 * from the server itself. Answers come from the file descriptors embedded in the generated code
 * (gen/): the files of the services served here and every file they import. When bearer tokens
 * are configured, reflection needs one (any valid token: it tells only the schema) unless
 * BAICHUAN_REFLECTION_OPEN opens it; only health is open by default.
 * Spec: https://github.com/grpc/grpc/blob/master/doc/server-reflection.md
 */
import { createFileRegistry, type DescFile, type FileRegistry, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { file_baichuan_v1_admin } from "../../gen/baichuan/v1/admin_pb.js";
import { file_baichuan_v1_schedule } from "../../gen/baichuan/v1/schedule_pb.js";
import { file_baichuan_v1_task } from "../../gen/baichuan/v1/task_pb.js";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Authenticator } from "../core/auth.js";

/** Bounds on what one client may ask, against a hostile one. */
export const REFLECTION_LIMITS = {
  /** Requests on one stream; past it the stream ends with RESOURCE_EXHAUSTED. */
  maxRequests: 1000,
  /** Characters in a name or host; a longer one is answered INVALID_ARGUMENT. */
  maxNameLength: 1024,
};

/** The files whose services this server offers (their imports are found from them). */
const SERVED_FILES: DescFile[] = [
  file_baichuan_v1_task,
  file_baichuan_v1_admin,
  file_baichuan_v1_schedule,
  file_grpc_health_v1_health,
  v1.file_grpc_reflection_v1_reflection,
  v1alpha.file_grpc_reflection_v1alpha_reflection,
];

/** Who may use reflection: `open`, anyone; otherwise callers with a valid token (when tokens are configured). */
export interface ReflectionAccess {
  auth: Authenticator;
  open: boolean;
}

/** Serve both reflection versions. The two differ only in their package name. */
export function reflectionRoutes(router: ConnectRouter, access: ReflectionAccess): void {
  const reflection = new Reflection(SERVED_FILES);
  async function* serve<R extends Request>(requests: AsyncIterable<R>, ctx: HandlerContext) {
    if (!access.open) access.auth.authenticate(ctx.requestHeader.get("authorization"));
    yield* reflection.serve(requests);
  }
  router.service(v1.ServerReflection, { serverReflectionInfo: serve });
  router.service(v1alpha.ServerReflection, { serverReflectionInfo: serve });
}

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/** The `message_response` of an answer, in a shape both versions accept. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: Code; errorMessage: string } };

class Reflection {
  private readonly registry: FileRegistry;
  /** Fully qualified names of the services offered. */
  private readonly services: string[];
  /** Every symbol (type, nested type, field, method, enum value, extension) -> its file. */
  private readonly symbols = new Map<string, DescFile>();
  /** Each file's serialized FileDescriptorProto, by file name. */
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(files: DescFile[]) {
    // One registry per served file (it takes in the file's imports, transitively), merged.
    this.registry = createFileRegistry(
      ...files.map((file) => createFileRegistry(file.proto, (name) => file.dependencies.find((dep) => dep.proto.name === name))),
    );
    this.services = files.flatMap((file) => file.services.map((service) => service.typeName));
    for (const type of this.registry) {
      this.symbols.set(type.typeName, type.file);
      if (type.kind === "service") {
        for (const method of type.methods) this.symbols.set(`${type.typeName}.${method.name}`, type.file);
      } else if (type.kind === "message") {
        for (const member of [...type.fields, ...type.oneofs]) this.symbols.set(`${type.typeName}.${member.name}`, type.file);
      } else if (type.kind === "enum") {
        // Enum values are scoped like their enum, not inside it: pkg.VALUE, pkg.Message.VALUE.
        const scope = type.typeName.slice(0, type.typeName.lastIndexOf(".") + 1);
        for (const value of type.values) this.symbols.set(scope + value.name, type.file);
      }
    }
    for (const file of this.registry.files) this.encoded.set(file.proto.name, toBinary(FileDescriptorProtoSchema, file.proto));
  }

  /** One ServerReflectionInfo stream: one answer per request, in order. */
  async *serve<R extends Request>(requests: AsyncIterable<R>) {
    const sent = new Set<string>(); // files this stream has already received
    let count = 0;
    for await (const request of requests) {
      if (++count > REFLECTION_LIMITS.maxRequests) {
        throw new ConnectError(
          `a reflection stream takes at most ${REFLECTION_LIMITS.maxRequests} requests; open a new stream`,
          Code.ResourceExhausted,
        );
      }
      yield { validHost: request.host, originalRequest: request, messageResponse: this.answer(request, sent) };
    }
  }

  private answer(request: Request, sent: Set<string>): Answer {
    const question = request.messageRequest;
    const name = question.case === "fileContainingExtension" ? question.value.containingType : (question.value ?? "");
    if (name.length > REFLECTION_LIMITS.maxNameLength || request.host.length > REFLECTION_LIMITS.maxNameLength) {
      return error(Code.InvalidArgument, `names and hosts are limited to ${REFLECTION_LIMITS.maxNameLength} characters`);
    }
    switch (question.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.services.map((service) => ({ name: service })) } };
      case "fileByFilename": {
        const file = this.registry.getFile(name);
        return file ? this.fileWithImports(file, sent) : error(Code.NotFound, `no file named ${JSON.stringify(name)}`);
      }
      case "fileContainingSymbol": {
        const file = this.symbols.get(name);
        return file ? this.fileWithImports(file, sent) : error(Code.NotFound, `no symbol named ${JSON.stringify(name)}`);
      }
      case "fileContainingExtension": {
        const number = question.value.extensionNumber;
        const message = this.registry.getMessage(name);
        const extension = message && this.registry.getExtensionFor(message, number);
        return extension
          ? this.fileWithImports(extension.file, sent)
          : error(Code.NotFound, `no extension numbered ${number} of ${JSON.stringify(name)}`);
      }
      case "allExtensionNumbersOfType": {
        if (!this.registry.getMessage(name)) return error(Code.NotFound, `no message type named ${JSON.stringify(name)}`);
        const numbers = [...this.registry].flatMap((t) =>
          t.kind === "extension" && t.extendee.typeName === name ? [t.number] : [],
        );
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: name, extensionNumber: numbers } };
      }
      default:
        return error(Code.InvalidArgument, "the request asks nothing: set one of the fields of message_request");
    }
  }

  /**
   * The file, then the files it imports (directly or not) that this stream has not received yet, as
   * grpc-go does: a client keeps the files it got.
   */
  private fileWithImports(file: DescFile, sent: Set<string>): Answer {
    const files = [file];
    sent.add(file.proto.name);
    for (let i = 0; i < files.length; i++) {
      for (const dep of files[i]!.dependencies) {
        if (sent.has(dep.proto.name)) continue;
        sent.add(dep.proto.name);
        files.push(dep);
      }
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: files.map((f) => this.encoded.get(f.proto.name)!) } };
  }
}

function error(errorCode: Code, errorMessage: string): Answer {
  return { case: "errorResponse", value: { errorCode, errorMessage } };
}
