/**
 * The `baichuan` command line as a user runs it: the process (src/cli/bin.ts, which the built
 * bin/baichuan.mjs runs) as a child process, from the sources through tsx, against real servers
 * (real redis-server, real listener): output, exit codes, errors. The built binary itself:
 * package.test.ts.
 */
import { execFile } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../src/cli/main.js";
import type { HandlerContext } from "../src/worker/handlers.js";
import { freePort } from "./support/net.js";
import { startProcess } from "./support/process.js";
import { eventually, gate, startService, type TestService } from "./support/service.js";

/** `node ...BIN args`: the command line's process from the sources. */
const BIN = ["--import", "tsx", "src/cli/bin.ts"];
const TOKEN = "a-token-of-16-chars-or-more";
const HOLD = "/cli_test/hold"; // blocks until `hold` opens; its worker runs one task at a time
const GATED = "/cli_test/gated"; // reports 50% "halfway", then waits for the gate named by params.key
const ID_RE = /^[0-9A-F]{20}$/;
const UNKNOWN_ID = "0000FFFFFFFFFFFFFFFF";

const hold = gate();
const gates = new Map<string, ReturnType<typeof gate>>();
const gateFor = (key: string) => {
  let g = gates.get(key);
  if (!g) {
    g = gate();
    gates.set(key, g);
  }
  return g;
};

let svc: TestService; // demo handlers and GATED, worker concurrency 10, the scheduler
let held: TestService; // same Redis: HOLD only, worker concurrency 1
let authed: TestService; // same Redis: bearer tokens required, no worker

beforeAll(async () => {
  svc = await startService({
    scheduler: true,
    handlers: {
      [GATED]: async (params: Record<string, unknown>, ctx: HandlerContext) => {
        await ctx.progress(50, "halfway");
        await gateFor(String(params.key)).opened;
        return { key: params.key };
      },
    },
  });
  held = await startService({
    redis: svc.redis,
    demo: false,
    handlers: { [HOLD]: async () => hold.opened },
    worker: { concurrency: 1 },
  });
  authed = await startService({ redis: svc.redis, authTokens: [TOKEN], worker: false });
});
afterAll(async () => {
  hold.open();
  for (const g of gates.values()) g.open();
  await authed?.close();
  await held?.close();
  await svc?.close();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment of a run: no BAICHUAN_* of ours, BAICHUAN_URL = svc unless overridden. */
function envFor(overrides: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("BAICHUAN_")) delete env[k];
  env.BAICHUAN_URL = svc.baseUrl;
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Run the command line in this process (`main(argv, io)`, as the binary does); resolves with its exit code and output. */
async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await main(args, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: envFor(env),
  });
  return { code, stdout, stderr };
}

/** Run the real process (`node --import tsx src/cli/bin.ts`); resolves with its exit code and output (-1 when killed by the timeout). */
function binary(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile("node", [...BIN, ...args], { env: envFor(env), timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The error of a failed run is one line on stderr, without a stack trace. */
function expectOneLineError(run: Run, re: RegExp): void {
  expect(run.stderr).toMatch(/^baichuan: .+\n$/);
  expect(run.stderr).toMatch(re);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

/** Create a task through the CLI, returning its id. */
async function createTask(args: string[], env: Record<string, string | undefined> = {}): Promise<string> {
  const run = await cli(["create", ...args], env);
  expect(run).toMatchObject({ code: 0, stderr: "" });
  const id = run.stdout.trim();
  expect(id).toMatch(ID_RE);
  return id;
}

/** The row of a table whose first cell is `first`, split into cells. */
function row(table: string, first: string): string[] {
  const line = table.split("\n").find((l) => l.split(/\s+/)[0] === first);
  expect(line, `no row ${first} in:\n${table}`).toBeDefined();
  return line!.trim().split(/\s{2,}/);
}

describe("the process, from the sources", () => {
  it("runs as a user runs it: --help, a create that is watched to its end, an unknown id (exit codes)", async () => {
    const help = await binary(["--help"]);
    expect(help).toMatchObject({ code: 0, stderr: "" });
    expect(help.stdout).toMatch(/^ {2}create HANDLER\s/m);
    const run = await binary(["create", "/demo_api/hello", "--params", '{"name":"bin"}', "--watch"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^FINISHED\s+in /m);
    const missing = await binary(["get", UNKNOWN_ID]);
    expect(missing.code).toBe(3);
    expectOneLineError(missing, /does not exist/);
  });
});

describe("help and usage", () => {
  it("--help and -h at the top level list every command, the common options and the exit codes (exit 0)", async () => {
    for (const flag of ["--help", "-h"]) {
      const run = await cli([flag]);
      expect(run.code).toBe(0);
      expect(run.stderr).toBe("");
      for (const command of [
        "create HANDLER",
        "get ID",
        "watch ID",
        "ls",
        "queue ACTION HANDLER",
        "workers",
        "tasks HANDLER",
        "cancel ID",
        "retry ID",
        "delete ID",
        "schedules",
      ]) {
        expect(run.stdout).toMatch(new RegExp(`^  ${command}\\s`, "m"));
      }
      for (const option of ["--url URL", "--token TOKEN", "--protocol P", "--json", "-h, --help"])
        expect(run.stdout).toContain(option);
      for (const code of ["0", "1", "2", "3", "4", "5"]) expect(run.stdout).toMatch(new RegExp(`^  ${code}\\s+\\S`, "m"));
    }
  });

  it("every command has its own --help listing its options (exit 0); `help COMMAND` says the same", async () => {
    const own: Record<string, string[]> = {
      create: [
        "--params JSON",
        "--unique",
        "--max-attempts N",
        "--timeout SECONDS",
        "--delay SECONDS",
        "--priority P",
        "--concurrency-key KEY",
        "--watch",
      ],
      get: [],
      watch: [],
      cancel: [],
      retry: [],
      delete: [],
      ls: [],
      queue: ["--rate N", "--burst N", "--max-running N", "--max-running-per-key N"],
      workers: [],
      tasks: ["--state S", "--limit N", "--page-token T"],
      schedules: ["--every DURATION", "--cron EXPR", "--tz ZONE", "--params JSON", "--start-at TIME", "--skip-missed"],
    };
    const runs = await Promise.all(Object.keys(own).map((c) => cli([c, "--help"])));
    Object.keys(own).forEach((command, i) => {
      const run = runs[i]!;
      expect(run.code, command).toBe(0);
      expect(run.stdout.split("\n")[0]).toMatch(new RegExp(`^Usage: baichuan ${command}\\b`));
      for (const option of [...own[command]!, "--url URL", "--token TOKEN", "--json"])
        expect(run.stdout, command).toContain(option);
    });
    // Another command's options are not listed.
    expect(runs[1]!.stdout).not.toContain("--params");
    const viaHelp = await cli(["help", "create"]);
    expect(viaHelp.code).toBe(0);
    expect(viaHelp.stdout).toBe(runs[0]!.stdout);
  });

  it("an unknown command or option, a missing or extra argument, a bad option value: exit 2, one line on stderr", async () => {
    const cases: [string[], RegExp][] = [
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["ls", "--frob"], /ls: unknown option '--frob'/],
      [["get"], /get: missing ID/],
      [["get", "A", "B"], /get: unexpected argument 'B'/],
      [["tasks", "/demo_api/hello", "--state", "sleeping"], /--state: 'sleeping' is not one of queued, scheduled, started/],
      [["tasks", "/demo_api/hello", "--limit", "0"], /--limit: '0' is not a whole number from 1 to 1000/],
      [["create", "/demo_api/hello", "--priority", "2"], /--priority: '2' is not -1, 0 or 1/],
      [["create", "/demo_api/hello", "--max-attempts", "1.5"], /--max-attempts: '1.5' is not a whole number/],
      [["create", "/demo_api/hello", "--timeout", "soon"], /--timeout: 'soon' is not a number of seconds/],
      [["create", "/demo_api/hello", "--delay"], /option '--delay' needs a value/],
      [["ls", "--protocol", "pigeon"], /--protocol: 'pigeon' is not one of connect, grpc, grpc-web/],
      [["ls", "--url", "ftp://example.org"], /--url: 'ftp:\/\/example.org' must start with http/],
    ];
    const runs = await Promise.all(cases.map(([args]) => cli(args)));
    runs.forEach((run, i) => {
      expect(run.code, cases[i]![0].join(" ")).toBe(2);
      expect(run.stdout).toBe("");
      expectOneLineError(run, cases[i]![1]);
    });
    // No command at all: the help, on stderr, and exit 2.
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("Usage: baichuan <command>");
    expect(none.stderr).toMatch(/baichuan: no command given\n$/);
  });

  it("bad JSON in --params: exit 2 saying what is wrong, and no task is created", async () => {
    const before = (await svc.redis.client.keys("mq:msg:*")).length;
    const bad = await cli(["create", "/demo_api/hello", "--params", '{name:"x"}']);
    expect(bad.code).toBe(2);
    expectOneLineError(bad, /create: --params is not valid JSON: .*position 1/);
    const notObject = await cli(["create", "/demo_api/hello", "--params", "[1,2]"]);
    expect(notObject.code).toBe(2);
    expectOneLineError(notObject, /--params must be a JSON object .*not an array/);
    expect((await svc.redis.client.keys("mq:msg:*")).length).toBe(before);
  });
});

describe("create and get", () => {
  it("create prints the id; get shows the task as text and as JSON", async () => {
    const id = await createTask(["/demo_api/hello", "--params", '{"name":"x"}']);
    await svc.bc.wait(id, { timeoutMs: 60_000 });

    const text = await cli(["get", id]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^id\\s+${id}$`, "m"));
    expect(text.stdout).toMatch(/^handler\s+\/demo_api\/hello$/m);
    expect(text.stdout).toMatch(/^status\s+FINISHED$/m);
    expect(text.stdout).toMatch(/^params\s+\{"name":"x"\}$/m);
    expect(text.stdout).toMatch(/^result\s+\{"message":"hello, x"\}$/m);
    expect(text.stdout).toMatch(/^cost\s+(<1ms|\d+ms|\d\.\ds)$/m);
    expect(text.stdout).toMatch(/^attempts\s+1 of 1$/m);

    const json = await cli(["get", id, "--json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      id,
      handler: "/demo_api/hello",
      status: "TASK_STATUS_FINISHED",
      params: { name: "x" },
      result: { message: "hello, x" },
      attempts: 1,
    });
  });

  it("create --json prints the response; the options reach the task", async () => {
    const created = await cli([
      "create",
      "/demo_api/sleep",
      "--params",
      '{"seconds":0}',
      "--json",
      "--delay",
      "60",
      "--priority",
      "-1",
      "--max-attempts",
      "3",
      "--timeout",
      "2.5",
      "--concurrency-key",
      "tenant-7",
    ]);
    expect(created.code).toBe(0);
    const res = JSON.parse(created.stdout);
    expect(res).toEqual({ taskId: expect.stringMatching(ID_RE), deduplicated: false, replayed: false });
    const task = JSON.parse((await cli(["get", res.taskId, "--json"])).stdout);
    expect(task).toMatchObject({
      status: "TASK_STATUS_SCHEDULED",
      priority: -1,
      maxAttempts: 3,
      timeout: "2.500s",
      concurrencyKey: "tenant-7",
    });
    const text = (await cli(["get", res.taskId])).stdout;
    expect(text).toMatch(/^status\s+SCHEDULED$/m);
    expect(text).toMatch(/^concurrency key\s+tenant-7$/m);
    expect(text).toMatch(/^scheduled\s+\S+Z \(in (59|60|5\d)s\)$/m);
    expect((await cli(["delete", res.taskId])).code).toBe(0);
  });

  it("create --unique returns the live twin's id, saying so", async () => {
    const id = await createTask([GATED, "--params", '{"key":"unique"}', "--unique"]);
    const again = await cli(["create", GATED, "--params", '{"key":"unique"}', "--unique"]);
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).toBe(id);
    expect(again.stderr).toMatch(/already queued or running/);
    const json = JSON.parse((await cli(["create", GATED, "--params", '{"key":"unique"}', "--unique", "--json"])).stdout);
    expect(json).toEqual({ taskId: id, deduplicated: true, replayed: false });
    gateFor("unique").open();
  });

  it("create --idempotency-key answers the same task again, saying so; other params with that key are refused (exit 4)", async () => {
    const key = `cli-${Date.now()}`;
    const id = await createTask(["/demo_api/hello", "--params", '{"name":"k"}', "--idempotency-key", key]);
    const again = await cli(["create", "/demo_api/hello", "--params", '{"name":"k"}', "--idempotency-key", key]);
    expect(again).toMatchObject({ code: 0, stdout: `${id}\n` });
    expect(again.stderr).toMatch(/idempotency key was used before/);
    const other = await cli(["create", "/demo_api/hello", "--params", '{"name":"other"}', "--idempotency-key", key]);
    expect(other.code).toBe(4);
    expectOneLineError(other, new RegExp(key));
  });
});

describe("watch", () => {
  it("create --watch on /demo_api/hello prints the id, FINISHED and the result: exit 0", async () => {
    const run = await cli(["create", "/demo_api/hello", "--params", '{"name":"x"}', "--watch"]);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe("");
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(ID_RE);
    expect(lines.at(-2)).toMatch(/^FINISHED\s+in \S+$/);
    expect(lines.at(-1)).toBe('result     {"message":"hello, x"}');
  });

  it("create --watch on /demo_api/fail ends FAILED: exit 1, with the error", async () => {
    const run = await cli(["create", "/demo_api/fail", "--watch"]);
    expect(run.code).toBe(1);
    expect(run.stdout.trimEnd().split("\n").at(-1)).toBe("FAILED     ERR_SERVER_EXCEPTION: failed on purpose");
  });

  it("create --watch --json prints one JSON document: the response and the ended task", async () => {
    const run = await cli(["create", "/demo_api/hello", "--params", '{"name":"j"}', "--watch", "--json"]);
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc).toMatchObject({ taskId: expect.stringMatching(ID_RE), deduplicated: false });
    expect(doc.task).toMatchObject({ id: doc.taskId, status: "TASK_STATUS_FINISHED", result: { message: "hello, j" } });
  });

  it("watch follows a running task: STARTED, its progress, then the end (plain lines when not a TTY): exit 0", async () => {
    const id = await createTask([GATED, "--params", '{"key":"watch"}']);
    const watcher = startProcess({ BAICHUAN_URL: svc.baseUrl }, ["node", ...BIN, "watch", id]);
    try {
      await watcher.waitFor(/halfway/);
      expect(watcher.output()).toMatch(/^STARTED\s+on \S+:\d+:\d+\s+\(attempt 1 of 1\)$/m);
      expect(watcher.output()).toMatch(/^progress\s+\[#{10}-{10}\]\s+50%\s+halfway$/m);
      expect(watcher.output()).not.toMatch(/FINISHED/);
      gateFor("watch").open();
      expect(await watcher.exited).toBe(0);
      expect(watcher.output()).toMatch(/^FINISHED\s+in \S+\nresult\s+\{"key":"watch"\}\n$/m);
      expect(watcher.output()).not.toContain("\x1b[");
    } finally {
      watcher.kill("SIGKILL");
    }
  });

  it("watch on a terminal redraws the progress bar in place", async () => {
    const id = await createTask([GATED, "--params", '{"key":"tty"}']);
    let written = "";
    const stdout = { isTTY: true, columns: 100, write: (s: string) => (written += s) };
    let errors = "";
    const done = main(["watch", id, "--url", svc.baseUrl], { stdout, stderr: { write: (s: string) => (errors += s) }, env: {} });
    await eventually(() => written.includes("halfway"));
    gateFor("tty").open();
    expect(await done).toBe(0);
    expect(errors).toBe("");
    // The bar is drawn after "clear the line", never ended by a newline; the end clears it first.
    const shown = written.replaceAll("\r\x1b[2K", "<CLEAR>");
    expect(shown).toMatch(/<CLEAR>progress\s+\[#{10}-{10}\]\s+50%\s+halfway\s+\(\S+\)/);
    expect(written).not.toMatch(/progress[^\r\n]*\n/);
    expect(shown).toMatch(/<CLEAR>FINISHED\s+in \S+\nresult\s+\{"key":"tty"\}\n$/);
    expect(shown).not.toContain("\x1b"); // no other escape sequence
  });

  it("watch of a task that already ended exits at once: 0 for FINISHED, 1 for FAILED", async () => {
    const ok = await createTask(["/demo_api/ping"]);
    await svc.bc.wait(ok, { timeoutMs: 60_000 });
    const failed = (await cli(["create", "/demo_api/fail", "--watch"])).stdout.split("\n")[0]!;
    const [a, b] = await Promise.all([cli(["watch", ok]), cli(["watch", failed, "--json"])]);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/^FINISHED/);
    expect(b.code).toBe(1);
    expect(JSON.parse(b.stdout)).toMatchObject({ id: failed, status: "TASK_STATUS_FAILED", errorCode: "ERR_SERVER_EXCEPTION" });
  });

  it("Ctrl-C stops a watch cleanly: exit 130, a note on stderr, no stack trace; the task goes on", async () => {
    const id = await createTask([GATED, "--params", '{"key":"interrupt"}']);
    const watcher = startProcess({ BAICHUAN_URL: svc.baseUrl }, ["node", ...BIN, "watch", id]);
    try {
      await watcher.waitFor(/halfway/);
      watcher.kill("SIGINT");
      expect(await watcher.exited).toBe(130);
      expect(watcher.output()).toContain(`baichuan: stopped watching ${id} (the task goes on)`);
      expect(watcher.output()).not.toMatch(/\n\s+at /);
      expect((await svc.bc.getTask(id)).status).toBe("started");
    } finally {
      watcher.kill("SIGKILL");
      gateFor("interrupt").open();
    }
  });
});

describe("queues, workers, tasks, cancel, retry, delete", () => {
  const holdIds: string[] = [];

  it("ls shows each queue with its counts, as a table and as JSON", async () => {
    // One HOLD task runs (concurrency 1); two wait behind it.
    for (let i = 0; i < 3; i++) holdIds.push(await createTask([HOLD, "--params", `{"i":${i}}`], { BAICHUAN_URL: held.baseUrl }));
    await eventually(async () => (await svc.bc.getTask(holdIds[0]!)).status === "started");
    expect((await cli(["create", "/demo_api/echo", "--watch"])).code).toBe(0);
    const run = await cli(["ls"]);
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines[0]!.split(/\s{2,}/)).toEqual([
      "HANDLER",
      "QUEUED",
      "STARTED",
      "SCHEDULED",
      "FINISHED",
      "FAILED",
      "RETRIED",
      "CANCELED",
      "OLDEST WAIT",
      "LIMITS",
      "HELD",
    ]);
    const [, queued, started, scheduled, finished, failed, , canceled, oldest] = row(run.stdout, HOLD);
    expect([queued, started, scheduled, finished, failed, canceled]).toEqual(["2", "1", "0", "0", "0", "0"]);
    expect(oldest).toMatch(/^(<1ms|\d+ms|\d+(\.\d)?s)$/);
    // Columns line up: every row as long as the header (numbers are right-aligned).
    expect(new Set(lines.map((l) => l.length)).size).toBe(1);
    expect(Number(row(run.stdout, "/demo_api/echo")[4])).toBeGreaterThanOrEqual(1);

    const json = JSON.parse((await cli(["ls", "--json"])).stdout);
    expect(json.queues.find((q: { handler: string }) => q.handler === HOLD)).toMatchObject({ queued: "2", started: "1" });
  });

  it("workers lists each live worker with its state and handlers", async () => {
    const run = await cli(["workers"]);
    expect(run.code).toBe(0);
    expect(run.stdout.split("\n")[0]!.split(/\s{2,}/)).toEqual([
      "NAME",
      "STATE",
      "UP",
      "HEARTBEAT",
      "FINISHED",
      "FAILED",
      "BUSY TIME",
      "HANDLERS",
    ]);
    const name = (await svc.redis.client.smembers("mq:workers")).find((w) => w.includes(`:${held.server.port}:`))!;
    expect(name).toBeDefined();
    const cells = row(run.stdout, name);
    expect(cells[1]).toMatch(/^(busy|idle)$/); // written with the heartbeat, every 10 s
    expect(cells.at(-1)).toBe(HOLD);
    const other = row(
      run.stdout,
      (await svc.redis.client.smembers("mq:workers")).find((w) => w.includes(`:${svc.server.port}:`))!,
    );
    expect(other.at(-1)!.split(",")).toEqual(expect.arrayContaining(["/demo_api/hello", "/demo_api/fail", GATED]));

    const json = JSON.parse((await cli(["workers", "--json"])).stdout);
    expect(json.workers.find((w: { name: string }) => w.name === name)).toMatchObject({ handlers: [HOLD], pid: process.pid });
  });

  it("cancel ends a queued task CANCELED (exit 0); canceling a finished task is refused (exit 4)", async () => {
    const run = await cli(["cancel", holdIds[1]!], { BAICHUAN_URL: held.baseUrl });
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${holdIds[1]} CANCELED\n`);
    expect((await cli(["get", holdIds[1]!])).stdout).toMatch(/^status\s+CANCELED$/m);
    const [, queued, started, , , , , canceled] = row((await cli(["ls"])).stdout, HOLD);
    expect([queued, started, canceled]).toEqual(["1", "1", "1"]);

    const done = await createTask(["/demo_api/ping"]);
    await svc.bc.wait(done, { timeoutMs: 60_000 });
    const refused = await cli(["cancel", done]);
    expect(refused.code).toBe(4);
    expectOneLineError(refused, /already ended \(finished\).*\(failed_precondition\)/);
  });

  it("tasks HANDLER lists a handler's tasks by state (queued by default), with --json and --limit", async () => {
    const queued = await cli(["tasks", HOLD]);
    expect(queued.code).toBe(0);
    expect(queued.stdout.split("\n")[0]!.split(/\s{2,}/)).toEqual(["ID", "STATUS", "AGE", "ATTEMPTS", "COST", "DETAIL"]);
    expect(row(queued.stdout, holdIds[2]!).slice(0, 2)).toEqual([holdIds[2], "QUEUED"]);
    expect(queued.stdout).not.toContain(holdIds[1]!);
    expect(row((await cli(["tasks", HOLD, "--state", "started"])).stdout, holdIds[0]!)[1]).toBe("STARTED");
    expect(row((await cli(["tasks", HOLD, "--state", "canceled"])).stdout, holdIds[1]!)[1]).toBe("CANCELED");

    const failedId = (await cli(["create", "/demo_api/fail", "--params", '{"message":"listed"}', "--watch"])).stdout.split(
      "\n",
    )[0]!;
    const failed = await cli(["tasks", "/demo_api/fail", "--state", "failed"]);
    expect(failed.code).toBe(0);
    const cells = row(failed.stdout, failedId);
    expect(cells[1]).toBe("FAILED");
    expect(cells.at(-1)).toBe("ERR_SERVER_EXCEPTION: listed");
    const json = JSON.parse((await cli(["tasks", "/demo_api/fail", "--state", "failed", "--json"])).stdout);
    expect(json.tasks.map((t: { id: string }) => t.id)).toContain(failedId);
    // --limit and --page-token: one queued task a page, in queue order.
    for (let i = 3; i < 5; i++) holdIds.push(await createTask([HOLD, "--params", `{"i":${i}}`], { BAICHUAN_URL: held.baseUrl }));
    const idsOf = (s: string) => s.split("\n").flatMap((l) => (ID_RE.test(l.split(/\s+/)[0]!) ? [l.split(/\s+/)[0]] : []));
    const first = await cli(["tasks", HOLD, "--limit", "1"]);
    expect(idsOf(first.stdout)).toEqual([holdIds[2]]);
    const token = /^more: baichuan tasks \S+ --state queued --limit 1 --page-token (\S+)$/m.exec(first.stdout)?.[1];
    expect(token).toBeDefined();
    const second = await cli(["tasks", HOLD, "--limit", "1", "--page-token", token!]);
    expect(second.code).toBe(0);
    expect(idsOf(second.stdout)).toEqual([holdIds[3]]);
  });

  it("retry queues a failed task again; it runs a second time (a finished one is refused: exit 4)", async () => {
    const id = (await cli(["create", "/demo_api/fail", "--watch"])).stdout.split("\n")[0]!;
    const run = await cli(["retry", id]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`${id} QUEUED again (attempt 1 of 2)\n`);
    expect((await cli(["watch", id])).code).toBe(1);
    expect(JSON.parse((await cli(["get", id, "--json"])).stdout)).toMatchObject({
      status: "TASK_STATUS_FAILED",
      attempts: 2,
      maxAttempts: 2,
    });

    const done = await createTask(["/demo_api/ping"]);
    await svc.bc.wait(done, { timeoutMs: 60_000 });
    const refused = await cli(["retry", done]);
    expect(refused.code).toBe(4);
    expectOneLineError(refused, /failed_precondition/);
  });

  it("delete removes a task (exit 0); then get and a second delete say not found (exit 3)", async () => {
    const id = await createTask(["/demo_api/ping"]);
    await svc.bc.wait(id, { timeoutMs: 60_000 });
    const run = await cli(["delete", id]);
    expect(run).toMatchObject({ code: 0, stdout: `${id} deleted\n`, stderr: "" });
    expect((await cli(["get", id])).code).toBe(3);
    const again = await cli(["delete", id, "--json"]);
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stdout)).toEqual({ deleted: false });
    expectOneLineError(again, new RegExp(`task ${id} does not exist`));
  });
});

describe("schedules", () => {
  it("create, list with the next run, get (text and JSON), pause, resume, delete", async () => {
    expect((await cli(["schedules"])).stdout).toBe("no schedules\n");
    const nightly = await cli([
      "schedules",
      "create",
      "nightly",
      "/demo_api/ping",
      "--cron",
      "0 2 * * *",
      "--tz",
      "Europe/Berlin",
    ]);
    expect(nightly).toMatchObject({ code: 0, stderr: "" });
    expect(nightly.stdout).toMatch(/^when\s+cron 0 2 \* \* \* Europe\/Berlin$/m);
    expect(nightly.stdout).toMatch(/^next run\s+\d{4}-\d\d-\d\dT\S+Z \(in /m);
    const tick = await cli(["schedules", "create", "tick", "/demo_api/echo", "--every", "1s", "--params", '{"n":1}']);
    expect(tick).toMatchObject({ code: 0, stderr: "" });
    expect(tick.stdout).toMatch(/^when\s+every 1\.0s$/m);

    // The scheduler in the service creates its tasks; get --json shows the last one as it is now.
    const last = await eventually(async () => {
      const run = await cli(["schedules", "get", "tick", "--json"]);
      const doc = JSON.parse(run.stdout) as { lastTaskStatus: string; lastTaskId: string; params: unknown };
      return doc.lastTaskStatus === "TASK_STATUS_FINISHED" ? doc : undefined;
    });
    expect(last.params).toEqual({ n: 1 });
    expect(last.lastTaskId).toMatch(ID_RE);

    const list = await cli(["schedules"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+HANDLER\s+WHEN\s+NEXT RUN\s+LAST RUN\s+LAST TASK/);
    expect(row(list.stdout, "nightly").slice(1, 4)).toEqual([
      "/demo_api/ping",
      "cron 0 2 * * * Europe/Berlin",
      expect.stringMatching(/^in /),
    ]);
    expect(row(list.stdout, "tick")[5]).toMatch(/^[0-9A-F]{20} [A-Z]+$/);

    const paused = await cli(["schedules", "pause", "tick"]);
    expect(paused.stdout).toMatch(/^state\s+paused$/m);
    expect(row((await cli(["schedules"])).stdout, "tick")[3]).toBe("paused");
    const resumed = await cli(["schedules", "resume", "tick"]);
    expect(resumed.stdout).toMatch(/^state\s+active$/m);

    expect(await cli(["schedules", "delete", "tick"])).toMatchObject({ code: 0, stdout: "tick deleted (its tasks are kept)\n" });
    const again = await cli(["schedules", "delete", "tick"]);
    expect(again.code).toBe(3);
    expectOneLineError(again, /schedule tick does not exist/);
    const via = await binary(["schedules", "get", "nightly"]);
    expect(via.code).toBe(0);
    expect(via.stdout).toMatch(/^id\s+nightly$/m);
    expect((await cli(["schedules", "delete", "nightly"])).code).toBe(0);
  });

  it("mistakes: usage errors exit 2, what the server refuses exits 4, an unknown schedule 3", async () => {
    for (const args of [
      ["schedules", "frob", "x"],
      ["schedules", "create", "x"],
      ["schedules", "create", "x", "/demo_api/ping"],
      ["schedules", "create", "x", "/demo_api/ping", "--every", "1s", "--cron", "* * * * *"],
      ["schedules", "create", "x", "/demo_api/ping", "--every", "soon"],
      ["schedules", "create", "x", "/demo_api/ping", "--every", "1", "--tz", "UTC"],
      ["schedules", "get"],
      ["schedules", "get", "x", "--every", "5"],
      ["schedules", "get", "x", "y"],
    ]) {
      const run = await cli(args);
      expect(run.code, args.join(" ")).toBe(2);
      expectOneLineError(run, /see baichuan schedules --help/);
    }
    const refused = await cli(["schedules", "create", "x", "/demo_api/ping", "--every", "0.5"]);
    expect(refused.code).toBe(4);
    expectOneLineError(refused, /every: must be at least 1 second.*invalid_argument/);
    const badCron = await cli(["schedules", "create", "x", "/demo_api/ping", "--cron", "0 25 * * *"]);
    expect(badCron.code).toBe(4);
    expectOneLineError(badCron, /cron: "0 25 \* \* \*" is not a cron expression/);
    expect((await cli(["schedules", "get", "x"])).code).toBe(3);
  });
});

describe("errors and connections", () => {
  it("an unknown task id: exit 3 from get, watch, cancel, retry; a malformed id is refused: exit 4", async () => {
    const runs = await Promise.all(["get", "watch", "cancel", "retry"].map((c) => cli([c, UNKNOWN_ID])));
    for (const run of runs) {
      expect(run.code).toBe(3);
      expect(run.stdout).toBe("");
      expectOneLineError(run, new RegExp(`task ${UNKNOWN_ID} does not exist.*\\(not_found\\)`));
    }
    const unknownHandler = await cli(["create", "/nobody/has_this"]);
    expect(unknownHandler.code).toBe(3);
    const malformed = await cli(["get", "not-an-id"]);
    expect(malformed.code).toBe(4);
    expectOneLineError(malformed, /invalid_argument/);
  });

  it("a server that is not there: exit 5 saying it cannot be reached, on every protocol", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const runs = await Promise.all(
      ["connect", "grpc", "grpc-web"].map((p) => cli(["get", UNKNOWN_ID, "--protocol", p], { BAICHUAN_URL: url })),
    );
    for (const run of runs) {
      expect(run.code).toBe(5);
      expectOneLineError(run, new RegExp(`cannot reach the server at ${url}: .*ECONNREFUSED`));
    }
  });

  it("--url wins over BAICHUAN_URL; every protocol reaches the same server", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    // BAICHUAN_URL is used when --url is absent...
    expect((await cli(["create", "/demo_api/ping"], { BAICHUAN_URL: dead })).code).toBe(5);
    // ...and --url wins over it.
    const viaFlag = await cli(["create", "/demo_api/ping", "--url", svc.baseUrl], { BAICHUAN_URL: dead });
    expect(viaFlag.code).toBe(0);
    const created = viaFlag.stdout.trim();
    await svc.bc.wait(created, { timeoutMs: 60_000 });
    const runs = await Promise.all(["connect", "grpc", "grpc-web"].map((p) => cli(["get", created, "--protocol", p])));
    for (const run of runs) {
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/^status\s+FINISHED$/m);
    }
  });

  it("with tokens on: no token or a wrong one is refused (exit 4); --token or BAICHUAN_TOKEN works", async () => {
    const env = { BAICHUAN_URL: authed.baseUrl };
    const none = await cli(["ls"], env);
    expect(none.code).toBe(4);
    expectOneLineError(none, /unauthenticated: pass --token or set BAICHUAN_TOKEN/);
    const wrong = await cli(["ls", "--token", "not-the-right-token-at-all"], env);
    expect(wrong.code).toBe(4);
    expectOneLineError(wrong, /not valid/);

    const ls = await cli(["ls", "--token", TOKEN], env);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^HANDLER\s+QUEUED/);
    const run = await cli(["create", "/demo_api/hello", "--params", '{"name":"token"}', "--watch"], {
      ...env,
      BAICHUAN_TOKEN: TOKEN,
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('result     {"message":"hello, token"}');
  });
});

describe("queue stats", () => {
  it("prints a handler's runs per minute, oldest first, with run time percentiles, and their total", async () => {
    for (let i = 0; i < 3; i++)
      expect((await cli(["create", "/demo_api/sleep", "--params", '{"seconds":0.05}', "--watch"])).code).toBe(0);
    expect((await cli(["create", "/demo_api/fail", "--watch"])).code).toBe(1);
    const run = await cli(["queue", "stats", "/demo_api/sleep", "--minutes", "5"]);
    expect(run).toMatchObject({ code: 0, stderr: "" });
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines[0]!.split(/\s{2,}/)).toEqual(["MINUTE (UTC)", "FINISHED", "FAILED", "P50", "P95", "P99"]);
    expect(lines).toHaveLength(1 + 5 + 1);
    const rows = lines.slice(1, 6).map((l) => l.split(/\s{2,}/));
    const minutes = rows.map((r) => Date.parse(`${r[0]!.replace(" ", "T")}:00Z`));
    for (let i = 1; i < 5; i++) expect(minutes[i]! - minutes[i - 1]!).toBe(60_000);
    expect(rows.reduce((n, r) => n + Number(r[1]), 0)).toBe(3);
    // The minutes with runs show the 50 ms sleeps (within the histogram's 9%); the others "-".
    for (const r of rows) {
      if (r[1] === "0") expect(r.slice(3)).toEqual(["-", "-", "-"]);
      else for (const p of r.slice(3)) expect(Number(/^(\d+)ms$/.exec(p)?.[1])).toBeGreaterThanOrEqual(45);
    }
    expect(lines[6]).toBe("/demo_api/sleep: 3 finished, 0 failed in the last 5 minutes");
    // Earlier tests failed some too.
    const failed = /: 0 finished, (\d+) failed in the last 5 minutes\n$/.exec(
      (await cli(["queue", "stats", "/demo_api/fail", "--minutes", "5"])).stdout,
    );
    expect(Number(failed?.[1])).toBeGreaterThanOrEqual(1);

    const json = JSON.parse((await cli(["queue", "stats", "/demo_api/sleep", "--json"])).stdout);
    expect(json.points).toHaveLength(60);
    expect(json.points.reduce((n: number, p: { finished: string }) => n + Number(p.finished), 0)).toBe(3);
  });

  it("refuses a bad action, a missing handler or a bad --minutes (exit 2), and a bad handler (exit 4)", async () => {
    for (const [args, re] of [
      [["queue", "stat", "/demo_api/sleep"], /queue: 'stat' is not one of pause, resume, limits, stats/],
      [["queue", "stats", "/demo_api/sleep", "--rate", "5"], /queue: stats takes no limit options/],
      [["queue", "pause", "/demo_api/sleep", "--minutes", "5"], /queue: pause takes no --minutes/],
      [["queue", "stats"], /queue: missing HANDLER/],
      [["queue", "stats", "/demo_api/sleep", "--minutes", "1441"], /--minutes: '1441' is not a whole number from 1 to 1440/],
      [["queue", "stats", "/demo_api/sleep", "--minutes", "0"], /--minutes: '0' is not/],
      [["queue", "stats", "/demo_api/sleep", "--minutes", "x"], /--minutes: 'x' is not/],
    ] as const) {
      const run = await cli([...args]);
      expect(run.code, args.join(" ")).toBe(2);
      expectOneLineError(run, re);
    }
    const bad = await cli(["queue", "stats", "no-slash"]);
    expect(bad.code).toBe(4);
    expectOneLineError(bad, /not a handler path.*invalid_argument/);
  });
});
