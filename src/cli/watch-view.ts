/**
 * Watching a task (`watch`, `create --watch`): follow() reads the WatchTask stream to the task's end;
 * WatchView prints it live: a line per change of state, and its progress, as a bar redrawn in place
 * on a terminal or a line per report otherwise.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Task, TaskStatus } from "../../gen/baichuan/v1/task_pb.js";
import { type CliIO, type Context, EXIT, note } from "./context.js";
import { attemptsText, dueIn, errorText, formatDuration, isEnded, oneLine, resultText, statusName } from "./format.js";

/** Follow a task to its end, printing as it goes (unless --json); the exit code says how it ended. */
export async function follow(ctx: Context, taskId: string): Promise<{ task: Task; code: number }> {
  const view = ctx.json ? undefined : new WatchView(ctx.io.stdout);
  let last: Task | undefined;
  try {
    for await (const { task } of ctx.tasks.watchTask({ taskId }, { signal: ctx.signal })) {
      if (!task) continue;
      last = task;
      view?.update(task);
    }
  } catch (err) {
    view?.stop();
    if (ctx.signal.aborted) note(ctx.io, `stopped watching ${taskId} (the task goes on)`);
    throw err;
  }
  view?.stop();
  if (!last || !isEnded(last.status)) {
    throw new ConnectError(`the watch of ${taskId} ended before the task did: watch it again`, Code.Unavailable);
  }
  return { task: last, code: last.status === TaskStatus.FINISHED ? EXIT.OK : EXIT.TASK_FAILED };
}

/**
 * Prints a watched task: one line per change of state; while it runs, its progress, as a bar redrawn
 * in place on a terminal (with the time it has run), or one line per report otherwise.
 */
export class WatchView {
  private status: TaskStatus | undefined;
  private progress = -1;
  private progressMessage = "";
  private live = false;
  private running: Task | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly tty: boolean;

  constructor(private readonly stdout: CliIO["stdout"]) {
    this.tty = stdout.isTTY === true;
  }

  update(task: Task): void {
    if (task.status !== this.status) {
      this.status = task.status;
      this.progress = -1;
      this.progressMessage = "";
      this.line(stateLine(task));
      if (task.status === TaskStatus.FINISHED) this.line(`${"result".padEnd(10)} ${resultText(task)}`);
    }
    this.running = task.status === TaskStatus.STARTED ? task : undefined;
    if (!this.running) {
      this.stopTimer();
      return;
    }
    const changed = task.progress !== this.progress || task.progressMessage !== this.progressMessage;
    this.progress = task.progress;
    this.progressMessage = task.progressMessage;
    if (this.tty) {
      this.draw();
      this.timer ??= setInterval(() => this.draw(), 500);
      this.timer.unref?.();
    } else if (changed && (task.progress > 0 || task.progressMessage)) {
      this.line(progressLine(task));
    }
  }

  /** Leave the terminal with the cursor on a fresh line. */
  stop(): void {
    this.stopTimer();
    this.clearLive();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private draw(): void {
    if (!this.running) return;
    const started = this.running.startedAt ? timestampMs(this.running.startedAt) : Date.now();
    const text = `${progressLine(this.running)}  (${formatDuration(Math.max(0, Date.now() - started) / 1000)})`;
    const width = (this.stdout.columns || 80) - 1;
    this.stdout.write(`\r\x1b[2K${text.length > width ? text.slice(0, Math.max(0, width)) : text}`);
    this.live = true;
  }

  private clearLive(): void {
    if (!this.live) return;
    this.stdout.write("\r\x1b[2K");
    this.live = false;
  }

  private line(text: string): void {
    this.clearLive();
    this.stdout.write(`${text}\n`);
  }
}

function progressLine(task: Task): string {
  const pct = Math.max(0, Math.min(100, task.progress));
  const width = 20;
  const filled = Math.round((pct / 100) * width);
  const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
  return `${"progress".padEnd(10)} ${bar} ${`${Math.floor(pct)}%`.padStart(4)}${task.progressMessage ? `  ${oneLine(task.progressMessage)}` : ""}`;
}

function stateLine(task: Task): string {
  const name = statusName(task.status).padEnd(10);
  switch (task.status) {
    case TaskStatus.SCHEDULED:
      return `${name} ${task.scheduledFor ? dueIn(task.scheduledFor, Date.now()) : ""}`.trimEnd();
    case TaskStatus.QUEUED:
      return `${name} ${task.handler}${task.lastError ? `  (waiting to retry, ${attemptsText(task)}; last error: ${oneLine(task.lastError)})` : ""}`;
    case TaskStatus.STARTED:
      return `${name} on ${task.worker || "?"}  (${attemptsText(task)})`;
    case TaskStatus.FINISHED:
      return `${name} in ${formatDuration(task.cost)}`;
    case TaskStatus.FAILED:
      return `${name} ${errorText(task)}`;
    default:
      return name.trimEnd();
  }
}
