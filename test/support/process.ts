/**
 * The real service process as a child process: by default from the sources, as `npm run dev` runs
 * it (`node --import tsx src/app/main.ts`); package.test.ts runs the built one (`npm start`).
 */
import { type ChildProcess, spawn } from "node:child_process";

export interface ServiceProcess {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /**
   * Resolves when the output matches `re` (or `re` matches it `times` times); rejects after
   * `timeoutMs` or when the process exits.
   */
  waitFor(re: RegExp, timeoutMs?: number, times?: number): Promise<void>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

export function startProcess(
  env: Record<string, string | undefined>,
  command = ["node", "--import", "tsx", "src/app/main.ts"],
): ServiceProcess {
  const fullEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(fullEnv)) if (k.startsWith("BAICHUAN_")) delete fullEnv[k];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) fullEnv[k] = v;
  const child = spawn(command[0]!, command.slice(1), { env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      for (const w of waiters) w();
      resolve(code);
    }),
  );
  return {
    child,
    output: () => out,
    exited,
    kill: (signal = "SIGTERM") => void child.kill(signal),
    waitFor(re, timeoutMs = 90_000, times = 1) {
      const all = new RegExp(re.source, `${re.flags.replace("g", "")}g`);
      const matched = () => (times === 1 ? re.test(out) : (out.match(all)?.length ?? 0) >= times);
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (matched()) done(resolve);
          else if (child.exitCode !== null)
            done(() => reject(new Error(`process exited (${child.exitCode}) before ${re}:\n${out}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`timed out waiting for ${re}:\n${out}`))), timeoutMs);
        const done = (fn: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          fn();
        };
        waiters.add(check);
        check();
      });
    },
  };
}
