/**
 * Strangers kept out: bearer tokens on every RPC and legacy URL (the health check stays open),
 * tokens limited to handler patterns, secrets never in logs or errors, TLS with ALPN, and handler
 * errors that never show stack traces or file paths unless debug is on.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { createLogger } from "../src/ops/log.js";
import { handlerTag } from "../src/store/keys.js";
import { failureOf, PROTOCOLS, startService, type TestService } from "./support/service.js";

const exec = promisify(execFile);
const FULL = "full-access-token-0123456789";
const PING_ONLY = "ping-echo-only-token-abcdef";
const logLines: string[] = [];

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

describe("bearer tokens", () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startService({
      authTokens: [FULL, `${PING_ONLY}=/demo_api/ping|/demo_api/ec*`],
      logger: createLogger("debug", {}, (line) => void logLines.push(line)),
    });
  });
  afterAll(async () => {
    await svc?.close();
  });

  describe.each(PROTOCOLS)("over %s", (protocol) => {
    it("refuses calls without a token or with a wrong one (UNAUTHENTICATED), accepts a valid one", async () => {
      const client = svc.clients[protocol];
      const { taskId } = await client.createTask({ handler: "/demo_api/ping" }, bearer(FULL));
      for (const options of [{}, bearer("not-a-real-token-000000000"), { headers: { authorization: FULL } }]) {
        const [create, message] = await failureOf(client.createTask({ handler: "/demo_api/ping" }, options));
        expect(create).toBe(Code.Unauthenticated);
        expect(message).not.toContain("not-a-real-token");
        expect((await failureOf(client.getTask({ taskId }, options)))[0]).toBe(Code.Unauthenticated);
        const watch = (async () => {
          for await (const _ of client.watchTask({ taskId }, options)) void _;
        })();
        expect((await failureOf(watch))[0]).toBe(Code.Unauthenticated);
      }
      expect((await client.getTask({ taskId }, bearer(FULL))).task?.id).toBe(taskId);
    });

    it("limits a token to its handler patterns (PERMISSION_DENIED elsewhere)", async () => {
      const client = svc.clients[protocol];
      expect((await failureOf(client.createTask({ handler: "/demo_api/hello" }, bearer(PING_ONLY))))[0]).toBe(
        Code.PermissionDenied,
      );
      const { taskId: echo } = await client.createTask({ handler: "/demo_api/echo", params: { a: 1 } }, bearer(PING_ONLY));
      let last: TaskStatus | undefined;
      for await (const { task } of client.watchTask({ taskId: echo }, bearer(PING_ONLY))) last = task!.status;
      expect(last).toBe(TaskStatus.FINISHED);
      // A task of another handler can be neither read nor watched with the limited token.
      const { taskId: hello } = await client.createTask({ handler: "/demo_api/hello" }, bearer(FULL));
      expect((await failureOf(client.getTask({ taskId: hello }, bearer(PING_ONLY))))[0]).toBe(Code.NotFound);
      const watch = (async () => {
        for await (const _ of client.watchTask({ taskId: hello }, bearer(PING_ONLY))) void _;
      })();
      expect((await failureOf(watch))[0]).toBe(Code.NotFound);
    });

    it("tells a limited token nothing of a task of another handler: the same answer as for no task at all", async () => {
      const client = svc.clients[protocol];
      const { taskId: hello } = await client.createTask({ handler: "/demo_api/hello" }, bearer(FULL));
      await svc.bc.wait(hello);
      const { taskId: failed } = await client.createTask({ handler: "/demo_api/fail" }, bearer(FULL));
      await svc.bc.wait(failed);
      // Ids no task has: one with the tag of the same handler, one of an allowed handler, a seed-form id.
      const missing = [
        `${hello.slice(0, 4)}${"0".repeat(16)}`,
        `${handlerTag("/demo_api/ping")}${"0".repeat(16)}`,
        "AC3C301A7CA516EA",
      ];
      const limited = bearer(PING_ONLY);
      const watch = (taskId: string) =>
        (async () => {
          for await (const _ of client.watchTask({ taskId }, limited)) void _;
        })();
      const answers = async (taskId: string) => {
        const masked = (a: [Code | undefined, string]) => [a[0], a[1].replaceAll(taskId, "<id>")];
        return {
          get: masked(await failureOf(client.getTask({ taskId }, limited))),
          watch: masked(await failureOf(watch(taskId))),
          cancel: masked(await failureOf(client.cancelTask({ taskId }, limited))),
          retry: masked(await failureOf(client.retryTask({ taskId }, limited))),
          delete: await client.deleteTask({ taskId }, limited),
        };
      };
      const expected = {
        get: [Code.NotFound, "task <id> does not exist or is not one this token may see"],
        watch: [Code.NotFound, "task <id> does not exist or is not one this token may see"],
        cancel: [Code.NotFound, "task <id> does not exist or is not one this token may see"],
        retry: [Code.NotFound, "task <id> does not exist or is not one this token may see"],
        delete: expect.objectContaining({ deleted: false }),
      };
      for (const taskId of [hello, failed, ...missing]) expect(await answers(taskId), taskId).toEqual(expected);
      // Nothing changed: the tasks are there, as they were, for the full token.
      expect((await client.getTask({ taskId: hello }, bearer(FULL))).task?.status).toBe(TaskStatus.FINISHED);
      expect((await client.getTask({ taskId: failed }, bearer(FULL))).task?.status).toBe(TaskStatus.FAILED);
      // A full token is told plainly.
      expect(await failureOf(client.getTask({ taskId: missing[0]! }, bearer(FULL)))).toEqual([
        Code.NotFound,
        `task ${missing[0]} does not exist (never created, or expired after its TTL)`,
      ]);
    });
  });

  it("guards the legacy URLs the same way, with 401/403, and leaves /healthz open", async () => {
    const post = (path: string, body: unknown, token?: string) =>
      fetch(svc.baseUrl + path, {
        method: "POST",
        body: JSON.stringify(body),
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
    const anonymous = await post("/baichuan/task_create", { handler: "/demo_api/ping", params: {} });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe("Bearer");
    expect(((await anonymous.json()) as any).stat).toBe("ERR_UNAUTHENTICATED");

    const denied = await post("/baichuan/task_create", { handler: "/demo_api/hello", params: {} }, PING_ONLY);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as any).stat).toBe("ERR_PERMISSION_DENIED");

    const created = (await (await post("/baichuan/task_create", { handler: "/demo_api/hello", params: {} }, FULL)).json()) as any;
    expect(created.stat).toBe("OK");
    const id = created.data.task_id;
    expect((await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${id}`)).status).toBe(401);
    expect((await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${id}`, bearer(FULL))).status).toBe(200);

    // Synchronous handler calls too.
    expect((await post("/demo_api/hello", { name: "x" })).status).toBe(401);
    expect((await post("/demo_api/hello", { name: "x" }, PING_ONLY)).status).toBe(403);
    expect(((await (await post("/demo_api/ping", {}, PING_ONLY)).json()) as any).stat).toBe("OK");

    const health = await fetch(`${svc.baseUrl}/healthz`);
    expect(health.status).toBe(200);
  });

  it("tells a limited token nothing of a task of another handler on the legacy URLs either", async () => {
    const send = (path: string, body: unknown, token: string) =>
      fetch(svc.baseUrl + path, { method: "POST", body: JSON.stringify(body), headers: { authorization: `Bearer ${token}` } });
    const created = (await (await send("/baichuan/task_create", { handler: "/demo_api/hello", params: {} }, FULL)).json()) as any;
    const hello: string = created.data.task_id;
    await svc.bc.wait(hello);
    const missing = [`${hello.slice(0, 4)}${"0".repeat(16)}`, "AC3C301A7CA516EA", "nope"];
    const answers = async (taskId: string) => {
      const masked = async (res: Response) => [res.status, (await res.text()).replaceAll(taskId, "<id>")];
      return {
        get: await masked(await fetch(`${svc.baseUrl}/baichuan/task_get?task_id=${taskId}`, bearer(PING_ONLY))),
        info: await masked(await send("/canghai/msg_info", { task_id: taskId }, PING_ONLY)),
        delete: await masked(await send("/canghai/delete_msg", { task_id: taskId }, PING_ONLY)),
      };
    };
    const expected = {
      get: [200, JSON.stringify({ stat: "ERR_MSG_NOT_EXIST", task_info: {} })],
      info: [
        200,
        JSON.stringify({ stat: "ERR_MSG_NOT_EXIST", error: "task <id> does not exist or is not one this token may see" }),
      ],
      delete: [200, JSON.stringify({ stat: "OK", data: { deleted: false } })],
    };
    for (const taskId of [hello, ...missing]) expect(await answers(taskId), taskId).toEqual(expected);
    expect((await svc.bc.getTask(hello)).status).toBe("finished");
  });

  it("never writes a token into the logs", async () => {
    // Make some failures happen while logging at debug level.
    await svc.clients.grpc.createTask({ handler: "/demo_api/fail" }, bearer(FULL));
    await failureOf(svc.clients.grpc.createTask({ handler: "/demo_api/ping" }, bearer(`${FULL}x`)));
    await new Promise((r) => setTimeout(r, 100));
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) {
      expect(line).not.toContain(FULL);
      expect(line).not.toContain(PING_ONLY);
    }
  });
});

describe("TLS", () => {
  let svc: TestService;
  let certPath = "";
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "baichuan-tls-"));
    await exec("openssl", [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ]);
    certPath = join(dir, "cert.pem");
    svc = await startService({ tls: { cert: readFileSync(certPath), key: readFileSync(join(dir, "key.pem")) } });
  });
  afterAll(async () => {
    await svc?.close();
  });

  it.each(PROTOCOLS)("serves %s over TLS (HTTP/2 by ALPN, HTTP/1.1 still accepted)", async (protocol) => {
    const client = svc.clients[protocol];
    const { taskId } = await client.createTask({ handler: "/demo_api/hello", params: { name: "tls" } });
    let last: TaskStatus | undefined;
    for await (const { task } of client.watchTask({ taskId })) last = task!.status;
    expect(last).toBe(TaskStatus.FINISHED);
  });

  it("answers the seed's curl call over HTTPS, on HTTP/1.1 and HTTP/2", async () => {
    for (const version of ["--http1.1", "--http2"]) {
      const body = '{"handler":"/demo_api/ping","params":{}}';
      const { stdout } = await exec("curl", [
        "-s",
        version,
        "--cacert",
        certPath,
        "-d",
        body,
        `${svc.baseUrl}/baichuan/task_create`,
      ]);
      expect(JSON.parse(stdout).stat).toBe("OK");
    }
  });
});

describe("handler errors", () => {
  let svc: TestService;
  let debug: TestService;
  const leaky = () => {
    const err = new Error("ENOENT: no such file or directory, open '/srv/app/config/secret.json' (from /srv/app/lib/db.js:12:5)");
    throw err;
  };
  beforeAll(async () => {
    svc = await startService({ demo: false, handlers: { "/leak/path": leaky } });
    debug = await startService({ demo: false, handlers: { "/leak/path": leaky }, worker: { debug: true } });
  });
  afterAll(async () => {
    await svc?.close();
    await debug?.close();
  });

  it("reach callers as messages, with file paths masked and no stack trace", async () => {
    const { id } = await svc.bc.enqueue("/leak/path", {});
    const task = await svc.bc.wait(id);
    expect(task.error).toBe("ENOENT: no such file or directory, open '<path>' (from <path>)");
    expect(task.rawResult).not.toContain("/srv/app");
    expect(task.rawResult).not.toMatch(/\s+at /);
    const sync = (await (await fetch(`${svc.baseUrl}/leak/path`, { method: "POST", body: "{}" })).json()) as any;
    expect(sync.stat).toBe("ERR_SERVER_EXCEPTION");
    expect(JSON.stringify(sync)).not.toContain("/srv/app");
  });

  it("keep their stack trace when debug is on", async () => {
    const { id } = await debug.bc.enqueue("/leak/path", {});
    const task = await debug.bc.wait(id);
    expect(task.error).toContain("/srv/app/config/secret.json");
    expect(task.error).toMatch(/\n\s+at /);
  });
});
