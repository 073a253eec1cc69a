/**
 * The README's examples, run as they stand against a real service this test starts: its ```ts
 * blocks (imports of "baichuan" and "baichuan/client" mapped to the sources), the commands of its
 * ```sh blocks (curl, buf curl, the `baichuan` command), its inline curl calls and its Python
 * client, each output compared with what the README shows next to it. Only the address
 * (127.0.0.1:8585, the Redis URL) and `<id>` placeholders are replaced, and the README's example
 * task ids by the ids the service hands out. A command this test cannot run is on NOT_RUN, with
 * the reason.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startService, type TestService } from "./support/service.js";

const exec = promisify(execFile);
const README = readFileSync("README.md", "utf8");
const REPO = resolve(".");
/** The Python with Debian's grpcio and grpc_tools (as python-client.test.ts uses). */
const PYTHON = "/usr/bin/python3";

/** Commands shown but not run here, and why. */
const NOT_RUN: Array<[RegExp, string]> = [
  [/^npm ci && npm (start|test)\b/, "the set-up commands themselves (this test runs under `npm test`)"],
  [/^grpcurl /, "grpcurl has no Debian package; `buf curl` above reads the same reflection"],
];

interface Block {
  lang: string;
  body: string;
  /** The ```text block right after this one, when there is one: its expected output. */
  output?: string;
}

function blocks(markdown: string): Block[] {
  const found: Block[] = [];
  for (const m of markdown.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
    const previous = found.at(-1);
    if (m[1] === "text" && previous && previous.output === undefined) previous.output = m[2]!;
    else found.push({ lang: m[1]!, body: m[2]! });
  }
  return found;
}

const ALL = blocks(README);
const byLang = (lang: string) => ALL.filter((b) => b.lang === lang);

/** The shell commands of a block (a trailing `\` continues a line), each with the output shown after it. */
function commands(body: string): Array<{ command: string; output: string[] }> {
  const lines = body.replace(/\\\n\s*/g, "").split("\n");
  const prompted = lines.some((l) => l.startsWith("$ "));
  const out: Array<{ command: string; output: string[] }> = [];
  for (const line of lines) {
    if (line.trim() === "") continue;
    if (!prompted || line.startsWith("$ ")) out.push({ command: line.replace(/^\$ /, ""), output: [] });
    else out.at(-1)?.output.push(line);
  }
  return out;
}

let svc: TestService;
let port: number;
/** A directory on PATH with `baichuan` (the package's command line, run from the sources). */
let bin: string;
/** README example task id -> the id the service handed out in its place. */
const ids = new Map<string, string>();
/** The id of the task a `<id>` stands for: the latest one a command created. */
let currentId: string | undefined;
/** Where the README's protoc command wrote the Python stubs. */
let pythonDir: string | undefined;

beforeAll(async () => {
  svc = await startService();
  port = svc.server.port;
  bin = mkdtempSync(join(tmpdir(), "baichuan-readme-bin-"));
  // The command line's process from the sources (bin/baichuan.mjs runs its built copy).
  writeFileSync(join(bin, "baichuan"), `#!/bin/sh\nexec node --import tsx ${JSON.stringify(resolve("src/cli/bin.ts"))} "$@"\n`, {
    mode: 0o755,
  });
  // `baichuan tasks /demo_api/fail --state failed` lists failed tasks: make one.
  await svc.bc.wait((await svc.bc.enqueue("/demo_api/fail", {})).id);
});
afterAll(async () => {
  await svc?.close();
});

/** A command as run here: the test's address, ids and Python. */
function adapt(command: string): string {
  let out = command.replaceAll("127.0.0.1:8585", `127.0.0.1:${port}`).replaceAll("redis://127.0.0.1:6379/0", svc.redis.url);
  for (const [example, real] of ids) out = out.replaceAll(example, real);
  if (currentId) out = out.replaceAll("<id>", currentId);
  return out.replace(/^python3 /, `${PYTHON} `);
}

async function sh(command: string, cwd = REPO): Promise<string> {
  const { stdout } = await exec("sh", ["-c", command], {
    cwd,
    timeout: 30_000,
    env: {
      ...process.env,
      PATH: `${bin}:${REPO}/node_modules/.bin:${process.env.PATH}`,
      BAICHUAN_URL: `http://127.0.0.1:${port}`,
    },
  });
  return stdout;
}

/** Wait for the tasks a command names to end, so that reading them shows their outcome. */
async function settle(command: string): Promise<void> {
  for (const id of command.match(/\b[0-9A-F]{20}\b/g) ?? []) await svc.bc.wait(id, { timeoutMs: 20_000 });
}

/** Remember ids the service handed out (a CreateTask answer, a `baichuan create` line). */
function noteIds(stdout: string): void {
  const id = /"taskId":\s*"([0-9A-F]{20})"/.exec(stdout)?.[1] ?? /"task_id":"([0-9A-F]{20})"/.exec(stdout)?.[1];
  if (id) currentId = id;
}

/**
 * Compare a JSON line the README shows (`...` stands for the rest) with one printed; README example
 * ids match any id and are remembered.
 */
function expectJsonLine(shown: string, printed: string): void {
  const examples: string[] = [];
  const pattern = shown
    .split(/(\.\.\.|[0-9A-F]{20})/)
    .map((part) => {
      if (part === "...") return ".*";
      if (/^[0-9A-F]{20}$/.test(part)) {
        if (ids.has(part)) return ids.get(part)!;
        examples.push(part);
        return "([0-9A-F]{20})";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("");
  const m = new RegExp(`^${pattern}$`).exec(printed.trim());
  expect(m, `printed ${printed.trim()}\nREADME shows ${shown}`).not.toBeNull();
  for (const [i, example] of examples.entries()) ids.set(example, m![i + 1]!);
}

/** A line of the command line's output without what varies from run to run: ids, times, counts, worker names. */
function shape(line: string): string {
  return line
    .replace(/\S+:\d+:\d+/g, "<worker>")
    .replace(/\b[0-9A-F]{20}\b/g, "<id>")
    .replace(/<?\d+(\.\d+)?(ms|s)\b/g, "<time>")
    .replace(/\d+(\.\d+)?(e[-+]?\d+)?/g, "<n>")
    .replace(/\s+/g, " ")
    .trim();
}

it("has exactly the two set-up commands of the quick start", () => {
  const first = byLang("sh")[0]!;
  expect(commands(first.body).map((c) => c.command.replace(/\s*#.*$/, ""))).toEqual([
    "npm ci && npm start",
    "npm ci && npm test",
  ]);
});

describe("the shell commands", () => {
  const runnable = byLang("sh").flatMap((b) => commands(b.body));
  it.each(runnable.map((c) => [c.command, c] as const))("%s", async (_, { command, output }) => {
    if (NOT_RUN.some(([re]) => re.test(command))) return; // shown, not run: the reason is on NOT_RUN
    if (command.includes("<id>") && !currentId) currentId = (await svc.bc.enqueue("/demo_api/ping", {})).id;
    const adapted = adapt(command);
    await settle(adapted);
    if (/grpc_tools\.protoc/.test(adapted)) {
      // Generates the Python stubs the Python block below imports.
      const dir = mkdtempSync(join(tmpdir(), "baichuan-readme-py-"));
      await sh(adapted.replaceAll(" proto", ` ${REPO}/proto`), dir);
      pythonDir = dir;
      return;
    }
    const printed = await sh(adapted);
    noteIds(printed);
    if (output.length > 0) {
      const lines = printed.trimEnd().split("\n");
      if (output[0]!.startsWith("{")) {
        expect(lines).toHaveLength(output.length);
        for (const [i, shown] of output.entries()) expectJsonLine(shown, lines[i]!);
      } else {
        // The command line's tables and progress: every line shown is printed, in the same shape.
        const shapes = lines.map(shape);
        for (const shown of output) expect(shapes, `README line: ${shown}\nprinted:\n${printed}`).toContain(shape(shown));
        if (/^baichuan create /.test(command)) currentId = /^[0-9A-F]{20}$/m.exec(printed)?.[0] ?? currentId;
      }
    } else if (/CreateTask/.test(adapted)) expect(currentId).toBeDefined();
    else if (/WatchTask/.test(adapted)) expect(printed).toMatch(/"status":\s*"TASK_STATUS_FINISHED"/);
    else if (/--list-methods/.test(adapted)) expect(printed).toContain("baichuan.v1.TaskService/GetTask");
    else if (/GetTask/.test(adapted)) expect(JSON.parse(printed).task.id).toBe(currentId);
    else if (/GetQueueSeries/.test(adapted)) expect(JSON.parse(printed).points).toHaveLength(5);
    else throw new Error(`no check for ${command}: add one, or put it on NOT_RUN with the reason`);
  });
});

it("the Python client prints the statuses it is streamed, ending FINISHED", async () => {
  const [python] = byLang("python");
  expect(pythonDir, "the protoc command of the README ran first").toBeDefined();
  const file = join(pythonDir!, "snippet.py");
  writeFileSync(file, adapt(python!.body));
  const { stdout } = await exec(PYTHON, [file], { cwd: pythonDir, timeout: 30_000 });
  const statuses = stdout.trim().split("\n");
  expect(statuses.at(-1)).toBe("TASK_STATUS_FINISHED");
  for (const s of statuses) expect(["TASK_STATUS_QUEUED", "TASK_STATUS_STARTED", "TASK_STATUS_FINISHED"]).toContain(s);
});

it("the inline curl calls answer what the README says", async () => {
  const inline = [...README.matchAll(/`(curl [^`]+)`( answers `([^`]+)`)?/g)];
  expect(inline.length).toBeGreaterThan(0);
  for (const [, command, , answer] of inline) {
    const printed = JSON.parse(await sh(adapt(command!)));
    if (answer) expect(printed, command).toEqual(JSON.parse(answer));
    else expect(printed.stat, command).toBe("OK");
  }
});

describe("the TypeScript snippets", () => {
  /** Run a ```ts block as a program of its own, its package imports mapped to the sources. */
  async function runTs(body: string): Promise<string> {
    const source = adapt(body)
      .replaceAll('from "baichuan/client"', `from ${JSON.stringify(pathToFileURL(resolve("src/client.ts")).href)}`)
      .replaceAll('from "baichuan"', `from ${JSON.stringify(pathToFileURL(resolve("src/index.ts")).href)}`);
    expect(source).not.toMatch(/from "baichuan/);
    const file = join(mkdtempSync(join(tmpdir(), "baichuan-readme-ts-")), "snippet.mts");
    writeFileSync(file, source);
    // The program must end by itself: nothing it opened may keep it alive.
    const { stdout } = await exec("node", ["--import", "tsx", file], { cwd: REPO, timeout: 30_000 });
    return stdout;
  }

  const [client, library] = byLang("ts");

  it("the client snippet prints the task as the watch begins, then each change pushed, as the README shows", async () => {
    expect(client!.body).toContain('from "baichuan/client"');
    const shown = client!.output!.trim().split("\n");
    let printed = (await runTs(client!.body)).trim().split("\n");
    // QUEUED first when no worker took the task at once (the README says so).
    if (printed[0] === "QUEUED 0%") printed = printed.slice(1);
    // Every change after the watch began: the README's lines from the first state the watch saw.
    expect(printed.length).toBeGreaterThanOrEqual(3);
    expect(printed).toEqual(shown.slice(shown.length - printed.length));
  });

  it("the library snippet prints the finished task and ends", async () => {
    expect(library!.body).toContain('from "baichuan"');
    const printed = (await runTs(library!.body)).trim();
    expect(shape(printed)).toBe(shape(library!.output!.trim()));
  });
});
