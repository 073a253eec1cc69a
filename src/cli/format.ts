/**
 * Text for a person and JSON for a program: task states, durations and times, a task as `field  value`
 * lines, the one-line detail of a task in a listing, aligned tables, protobuf JSON.
 */
import { type DescMessage, type JsonValue, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Duration, durationMs, type Timestamp, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { QueueInfo } from "../../gen/baichuan/v1/admin_pb.js";
import { type Task, TaskSchema, TaskStatus } from "../../gen/baichuan/v1/task_pb.js";

/** Collapse a multi-line message onto one line. */
export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

/** A message as protobuf JSON, fields at their default values included. */
export function jsonOf<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): JsonValue {
  return toJson(schema, message, { alwaysEmitImplicit: true });
}

export function taskJson(task: Task): JsonValue {
  return jsonOf(TaskSchema, task);
}

// ---------------------------------------------------------------------------------------------
// Tasks

export function statusName(status: TaskStatus): string {
  return TaskStatus[status] ?? String(status);
}

export function isEnded(status: TaskStatus): boolean {
  return status === TaskStatus.FINISHED || status === TaskStatus.FAILED || status === TaskStatus.CANCELED;
}

export function attemptsText(task: Task): string {
  return `attempt ${task.attempts} of ${task.maxAttempts || 1}`;
}

/** What the handler returned, as compact JSON. */
export function resultText(task: Task): string {
  return JSON.stringify(task.result ? toJson(ValueSchema, task.result) : null);
}

/** A failed task's error, after its code: `ERR_X: message`. */
export function errorText(task: Task): string {
  return `${task.errorCode ? `${task.errorCode}: ` : ""}${oneLine(task.error)}`;
}

/** How long until a scheduled time: `due in 3m4s` (`due in 0s` once past). */
export function dueIn(ts: Timestamp, now: number): string {
  return `due in ${formatDuration(Math.max(0, timestampMs(ts) - now) / 1000)}`;
}

export function taskDetail(t: Task, now: number): string {
  switch (t.status) {
    case TaskStatus.FAILED:
      return errorText(t);
    case TaskStatus.STARTED:
      return `${t.worker}${t.progress > 0 || t.progressMessage ? `  ${Math.floor(t.progress)}% ${oneLine(t.progressMessage)}`.trimEnd() : ""}`;
    case TaskStatus.SCHEDULED:
      return t.scheduledFor ? dueIn(t.scheduledFor, now) : "";
    case TaskStatus.QUEUED:
      return [t.priority ? `priority ${t.priority}` : "", t.lastError ? `last error: ${oneLine(t.lastError)}` : ""]
        .filter(Boolean)
        .join("  ");
    default:
      return "";
  }
}

/** A task as `field  value` lines; unset fields are left out. */
export function describeTask(t: Task): string {
  const now = Date.now();
  const rows: [string, string | undefined][] = [
    ["id", t.id],
    ["handler", t.handler],
    ["status", statusName(t.status)],
    ["params", JSON.stringify(t.params ?? {})],
    ["result", t.status === TaskStatus.FINISHED ? resultText(t) : undefined],
    ["error", t.error ? errorText(t) : undefined],
    ["last error", t.lastError && t.lastError !== t.error ? oneLine(t.lastError) : undefined],
    [
      "progress",
      t.progress > 0 || t.progressMessage
        ? `${Math.floor(t.progress)}%${t.progressMessage ? `  ${oneLine(t.progressMessage)}` : ""}`
        : undefined,
    ],
    ["priority", t.priority ? `${t.priority} (${t.priority > 0 ? "high" : "low"})` : undefined],
    ["concurrency key", t.concurrencyKey || undefined],
    ["created", formatTime(t.createdAt, now)],
    ["scheduled", formatTime(t.scheduledFor, now)],
    ["started", formatTime(t.startedAt, now)],
    ["ended", formatTime(t.endedAt, now)],
    ["cost", isEnded(t.status) ? formatDuration(t.cost) : undefined],
    ["worker", t.worker || undefined],
    ["attempts", `${t.attempts} of ${t.maxAttempts || 1}`],
    ["timeout", durationText(t.timeout)],
    ["queue ttl", durationText(t.ttl)],
    ["creator", t.creatorIp || undefined],
  ];
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

// ---------------------------------------------------------------------------------------------
// Queues

/** A queue's limits and pause in a few words (`paused, 5/s burst 10, 2 running, 1 per key`); `-` for none. */
export function limitsText(q: QueueInfo): string {
  const parts: string[] = [];
  if (q.paused) parts.push("paused");
  if (q.ratePerSecond > 0) parts.push(`${q.ratePerSecond}/s${q.burst > 0 ? ` burst ${q.burst}` : ""}`);
  if (q.maxRunning > 0) parts.push(`${q.maxRunning} running`);
  if (q.maxRunningPerKey > 0) parts.push(`${q.maxRunningPerKey} per key`);
  return parts.length > 0 ? parts.join(", ") : "-";
}

// ---------------------------------------------------------------------------------------------
// Durations and times

/** Seconds, for a person: `<1ms`, `340ms`, `1.2s`, `42s`, `3m4s`, `2h5m`, `3d4h`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "-";
  if (seconds < 0.001) return seconds === 0 ? "0s" : "<1ms";
  if (seconds < 1) return `${Math.floor(seconds * 1000)}ms`;
  if (seconds < 10) return `${(Math.floor(seconds * 10) / 10).toFixed(1)}s`;
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
}

/** A protobuf Duration as formatDuration writes it; undefined when unset. */
export function durationText(d: Duration | undefined): string | undefined {
  return d ? formatDuration(durationMs(d) / 1000) : undefined;
}

/** The time since `ts` as formatDuration writes it; undefined when unset. */
export function ageText(ts: Timestamp | undefined, now: number): string | undefined {
  return ts ? formatDuration((now - timestampMs(ts)) / 1000) : undefined;
}

/** A point in time: ISO 8601, then how long ago or from now. */
export function formatTime(ts: Timestamp | undefined, now: number): string | undefined {
  if (!ts) return undefined;
  const ms = timestampMs(ts);
  const delta = now - ms;
  const rel = delta >= 0 ? `${formatDuration(delta / 1000)} ago` : `in ${formatDuration(-delta / 1000)}`;
  return `${new Date(ms).toISOString()} (${rel})`;
}

// ---------------------------------------------------------------------------------------------
// Tables

/** Aligned columns; `right` marks the columns aligned right (numbers). The last column is not padded. */
export function table(headers: string[], rows: string[][], right: boolean[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const render = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 && !right[i] ? c : right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [render(headers), ...rows.map(render)].join("\n");
}
