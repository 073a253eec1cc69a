/**
 * The dashboard's schedules (ScheduleService): a table of every schedule the token covers, with how
 * it ticks, its next run, its last run and the status of the task that run created, and buttons
 * to pause, resume or delete it (delete takes two clicks). Read every 2 s, and at once after a
 * button. The section builds itself and goes after the element the page names (app.ts mounts it).
 */
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { type Schedule, ScheduleService } from "../gen/baichuan/v1/schedule_pb.js";
import { TaskStatus } from "../gen/baichuan/v1/task_pb.js";

const POLL_MS = 2000;
const SOURCE = "schedules";

export interface ScheduleViewOptions {
  /** The section goes right after this element. */
  after: HTMLElement;
  /** The page's error banner. */
  showError(source: string, err: unknown): void;
  clearError(source: string): void;
}

type Child = Node | string | undefined;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Child[]) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) if (child !== undefined) node.append(child);
  return node;
}

/** A time as `HH:MM:SS` today, or with its date otherwise, and how far it is from now. */
function moment(ts: Timestamp | undefined): string {
  if (!ts) return "–";
  const date = timestampDate(ts);
  const today = date.toDateString() === new Date().toDateString();
  const text = today ? date.toLocaleTimeString("en-GB") : date.toLocaleString("en-GB");
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const rel = Math.abs(seconds) < 60 ? `${Math.abs(seconds)} s` : `${Math.round(Math.abs(seconds) / 60)} min`;
  return `${text} (${seconds >= 0 ? `in ${rel}` : `${rel} ago`})`;
}

function when(s: Schedule): string {
  if (s.cron) return `cron ${s.cron}${s.timeZone && s.timeZone !== "UTC" ? ` (${s.timeZone})` : ""}`;
  const seconds = s.every ? Number(s.every.seconds) + s.every.nanos / 1e9 : 0;
  return `every ${seconds < 120 ? `${seconds} s` : seconds < 7200 ? `${seconds / 60} min` : `${seconds / 3600} h`}`;
}

function state(s: Schedule): "paused" | "active" | "ended" {
  return s.paused ? "paused" : s.nextRunAt ? "active" : "ended";
}

function lastTask(s: Schedule): Child {
  // The latest tick created no task (its queue was full, for example): say why, under the last task.
  const error = s.lastError ? el("div", { class: "schedule-error" }, `last tick: no task (${s.lastError})`) : undefined;
  if (!s.lastTaskId) return error ?? "–";
  const status = s.lastTaskStatus === TaskStatus.UNSPECIFIED ? "EXPIRED" : (TaskStatus[s.lastTaskStatus] ?? "");
  return el(
    "span",
    {},
    el("a", { href: `#/task/${s.lastTaskId}` }, el("code", {}, s.lastTaskId)),
    " ",
    el("span", { class: `badge ${status.toLowerCase()}` }, status),
    error,
  );
}

function row(s: Schedule): HTMLTableRowElement {
  const st = state(s);
  return el(
    "tr",
    { "data-schedule": s.scheduleId, "data-state": st },
    el("td", {}, el("code", {}, s.scheduleId)),
    el("td", {}, s.handler),
    el("td", {}, when(s)),
    el("td", {}, st === "paused" ? "paused" : st === "ended" ? "none (ended)" : moment(s.nextRunAt)),
    el("td", {}, moment(s.lastRunAt)),
    el("td", {}, lastTask(s)),
    el(
      "td",
      { class: "actions" },
      st === "paused"
        ? el("button", { type: "button", "data-action": "resume" }, "Resume")
        : el("button", { type: "button", "data-action": "pause", ...(st === "ended" ? { disabled: "" } : {}) }, "Pause"),
      " ",
      el("button", { type: "button", "data-action": "delete" }, "Delete"),
    ),
  );
}

/** Build the section, show it after `options.after`, and keep it up to date. */
export function mountSchedules(transport: Transport, options: ScheduleViewOptions): void {
  const client = createClient(ScheduleService, transport);
  const body = el("tbody");
  const empty = el("p", { class: "empty muted" }, "No schedules. Create one with CreateSchedule or `baichuan schedules create`.");
  const headers = ["Schedule", "Handler", "When", "Next run", "Last run", "Last task", ""];
  const section = el(
    "section",
    { id: "schedules" },
    el("h2", {}, "Schedules"),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((t) => el("th", {}, t)))), body)),
    empty,
  );
  options.after.after(section);

  let timer: ReturnType<typeof setTimeout> | undefined;
  let reading = false;
  /** The schedule whose Delete was clicked once (the next click deletes it). */
  let confirming = "";

  async function refresh(): Promise<void> {
    clearTimeout(timer);
    if (reading) return;
    reading = true;
    try {
      const { schedules } = await client.listSchedules({});
      body.replaceChildren(...schedules.map(row));
      const asked = body.querySelector(`tr[data-schedule="${CSS.escape(confirming)}"] button[data-action="delete"]`);
      if (asked) asked.textContent = "Really delete?";
      else confirming = "";
      empty.hidden = schedules.length > 0;
      section.dataset.loaded = String(schedules.length);
      options.clearError(SOURCE);
    } catch (err) {
      options.showError(SOURCE, err);
    } finally {
      reading = false;
      timer = setTimeout(() => void refresh(), POLL_MS);
    }
  }

  body.addEventListener("click", async (event) => {
    const button = (event.target as HTMLElement).closest<HTMLButtonElement>("button[data-action]");
    const id = button?.closest<HTMLElement>("tr[data-schedule]")?.dataset.schedule;
    if (!button || id === undefined) return;
    const action = button.dataset.action;
    if (action === "delete" && confirming !== id) {
      confirming = id;
      button.textContent = "Really delete?";
      return;
    }
    button.disabled = true;
    try {
      if (action === "pause") await client.pauseSchedule({ scheduleId: id });
      else if (action === "resume") await client.resumeSchedule({ scheduleId: id });
      else if (action === "delete") await client.deleteSchedule({ scheduleId: id });
      confirming = "";
      options.clearError(SOURCE);
    } catch (err) {
      options.showError(SOURCE, err);
    }
    await refresh();
  });

  void refresh();
}
