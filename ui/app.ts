/**
 * The BaiChuan dashboard: plain DOM, the generated clients, Connect over fetch to the page's own
 * origin. Queues and workers are read every 2 s (AdminService); throughput is the change of the
 * finished + failed counters between two reads. A task's panel follows it live with
 * TaskService.WatchTask (server streaming). Everything a task carries is shown as text, never HTML.
 */
import { toJson } from "@bufbuild/protobuf";
import { type Duration, type Timestamp, timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService, type QueueInfo, type WorkerInfo } from "../gen/baichuan/v1/admin_pb.js";
import { type Task, TaskService, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import { flowCell, limitsCell, onFlowClick } from "./queue-flow.js";
import { mountSchedules } from "./schedules.js";
import { seriesView } from "./series.js";

const POLL_MS = 2000;
const TOKEN_KEY = "baichuan.token";

// --- RPC clients: the bearer token, when set, goes with every call.

let token = sessionStorage.getItem(TOKEN_KEY) ?? "";
const bearer: Interceptor = (next) => (req) => {
  if (token !== "") req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [bearer] });
const tasks = createClient(TaskService, transport);
const admin = createClient(AdminService, transport);

// --- DOM helpers.

function $<T extends HTMLElement = HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (!found) throw new Error(`the page has no ${selector}`);
  return found;
}

type Child = Node | string | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) if (child !== undefined && child !== false) node.append(child);
  return node;
}

function cell(content: Child, numeric = false): HTMLTableCellElement {
  return h("td", numeric ? { class: "num" } : {}, content);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// --- Formatting.

const statusName = (status: TaskStatus): string => TaskStatus[status] ?? String(status);

function badge(status: string): HTMLElement {
  return h("span", { class: `badge ${status.toLowerCase()}` }, status);
}

function count(n: bigint | number): string {
  return Number(n).toLocaleString("en-US");
}

function durationSeconds(d: Duration | undefined): number | undefined {
  return d === undefined ? undefined : Number(d.seconds) + d.nanos / 1e9;
}

/** 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. */
function span(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** Local time, `YYYY-MM-DD HH:MM:SS`. */
function when(ts: Timestamp | undefined): string {
  if (ts === undefined) return "–";
  const d = timestampDate(ts);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(ts: Timestamp | undefined): string {
  return ts === undefined ? "–" : span((Date.now() - timestampDate(ts).getTime()) / 1000);
}

function json(value: unknown): string {
  return JSON.stringify(value, null, 2) ?? "null";
}

function resultJson(task: Task): unknown {
  return task.result === undefined ? undefined : toJson(ValueSchema, task.result);
}

// --- Errors: one banner; a later success of the same source clears it.

const banner = $("#error");
let bannerSource = "";

function showError(source: string, err: unknown): void {
  const e = ConnectError.from(err);
  const hint =
    e.code === Code.Unauthenticated
      ? " (enter a bearer token above)"
      : e.code === Code.PermissionDenied
        ? " (this token does not cover it)"
        : "";
  banner.textContent = `${source}: ${e.message}${hint}`;
  banner.hidden = false;
  bannerSource = source;
}

function clearError(source: string): void {
  if (bannerSource === source) {
    banner.hidden = true;
    bannerSource = "";
  }
}

// --- Queues and workers, every POLL_MS.

/** The latest counter reading per handler, and the rate computed from the one before. */
const samples = new Map<string, { at: number; ended: number; rate: number | undefined }>();
const handlerNames = new Set<string>();

function throughput(q: QueueInfo, now: number): number | undefined {
  const ended = Number(q.finishedTotal + q.failedTotal);
  const prev = samples.get(q.handler);
  if (prev && now - prev.at < 500) return prev.rate; // a refresh right after another: keep the last rate
  const rate = prev ? Math.max(0, ended - prev.ended) / ((now - prev.at) / 1000) : undefined;
  samples.set(q.handler, { at: now, ended, rate });
  return rate;
}

function plain(n: bigint): HTMLElement {
  return h("span", n === 0n ? { class: "zero" } : {}, count(n));
}

function countButton(q: QueueInfo, status: string, n: bigint): HTMLElement {
  if (n === 0n) return plain(n);
  return h("button", { type: "button", class: "link", "data-handler": q.handler, "data-status": status }, count(n));
}

function renderQueues(queues: QueueInfo[]): void {
  const now = performance.now();
  let total: number | undefined;
  const rows = queues.map((q) => {
    handlerNames.add(q.handler);
    const rate = throughput(q, now);
    if (rate !== undefined) total = (total ?? 0) + rate;
    return h(
      "tr",
      { "data-handler": q.handler },
      cell(h("button", { type: "button", class: "link handler", "data-handler": q.handler, "data-status": "QUEUED" }, q.handler)),
      cell(countButton(q, "QUEUED", q.queued), true),
      cell(countButton(q, "STARTED", q.started), true),
      cell(countButton(q, "QUEUED", q.scheduled), true),
      cell(countButton(q, "FINISHED", q.finishedTotal), true),
      cell(countButton(q, "FAILED", q.failedTotal), true),
      cell(plain(q.retriedTotal), true),
      cell(countButton(q, "CANCELED", q.canceledTotal), true),
      cell(span(durationSeconds(q.oldestQueuedAge)), true),
      cell(rate === undefined ? "–" : h("span", rate === 0 ? { class: "zero" } : {}, rate.toFixed(1)), true),
      cell(limitsCell(q)),
      cell(flowCell(q)),
    );
  });
  $("#queues tbody").replaceChildren(...rows);
  $("#queues .empty").hidden = rows.length > 0;
  $("#rate").textContent = `${total === undefined ? "–" : total.toFixed(1)} tasks/s`;
}

function renderWorkers(workers: WorkerInfo[]): void {
  const rows = workers.map((w) => {
    for (const name of w.handlers) handlerNames.add(name);
    return h(
      "tr",
      {},
      cell(h("span", { title: `${w.hostname}, pid ${w.pid}` }, w.name)),
      cell(badge(w.state || "unknown")),
      cell(h("span", { class: "handlers" }, w.handlers.join(", "))),
      cell(ago(w.startedAt)),
      cell(`${span(durationSeconds(w.heartbeatAge))} ago`, true),
      cell(plain(w.finishedTotal), true),
      cell(plain(w.failedTotal), true),
      cell(span(durationSeconds(w.busyTime)), true),
    );
  });
  $("#workers tbody").replaceChildren(...rows);
  $("#workers .empty").hidden = rows.length > 0;
}

function renderHandlerList(): void {
  const list = $("#handlers");
  const names = [...handlerNames].sort();
  if (list.childElementCount === names.length) return;
  list.replaceChildren(...names.map((name) => h("option", { value: name })));
}

let pollTimer: ReturnType<typeof setTimeout> | undefined;
let polling = false;

async function poll(): Promise<void> {
  clearTimeout(pollTimer);
  if (polling) return;
  if (document.hidden) return; // a hidden tab asks nothing; it refreshes when shown again
  polling = true;
  try {
    const [queues, workers] = await Promise.all([admin.listQueues({}), admin.listWorkers({})]);
    renderQueues(queues.queues);
    void series.refresh(queues.queues);
    renderWorkers(workers.workers);
    renderHandlerList();
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    clearError("refresh");
  } catch (err) {
    $("#updated").textContent = "not updated";
    showError("refresh", err);
  } finally {
    polling = false;
    pollTimer = setTimeout(poll, POLL_MS);
  }
}

// Charts of the last hour per handler (series.ts), and the Pause/Resume buttons (queue-flow.ts).
const reporter = (source: string) => (err: unknown) => (err === undefined ? clearError(source) : showError(source, err));
const series = seriesView(admin, $("#series-charts"), reporter("charts"));
onFlowClick(admin, $("#queues tbody"), () => void poll(), reporter("pause"));

$("#queues tbody").addEventListener("click", (event) => {
  const button = (event.target as Element).closest<HTMLElement>("button[data-handler]");
  if (!button) return;
  showList(button.dataset.handler ?? "", button.dataset.status ?? "QUEUED");
});

// --- Task lists: a handler's tasks in one state, a page at a time.

const list = { handler: "", status: "QUEUED", pageSize: 20, tokens: [""], page: 0, next: "" };

function showList(handler: string, status: string): void {
  $<HTMLInputElement>("#list-handler").value = handler;
  $<HTMLSelectElement>("#list-status").value = status;
  Object.assign(list, { handler, status, tokens: [""], page: 0, next: "" });
  list.pageSize = Number($<HTMLSelectElement>("#list-size").value);
  void loadTasks();
}

async function loadTasks(): Promise<void> {
  if (list.handler === "") return;
  const status = TaskStatus[list.status as keyof typeof TaskStatus];
  try {
    const page = await admin.listTasks({
      handler: list.handler,
      status,
      pageSize: list.pageSize,
      pageToken: list.tokens[list.page] ?? "",
    });
    list.next = page.nextPageToken;
    $("#tasks tbody").replaceChildren(...page.tasks.map(taskRow));
    const empty = $("#tasks .empty");
    empty.hidden = page.tasks.length > 0;
    empty.textContent = list.next === "" ? "No tasks." : "No tasks in this part of the scan: try the next page.";
    $("#tasks").dataset.loaded = `${list.handler} ${list.status} ${list.page}`;
    clearError("tasks");
  } catch (err) {
    showError("tasks", err);
  }
  $<HTMLButtonElement>("#page-prev").disabled = list.page === 0;
  $<HTMLButtonElement>("#page-next").disabled = list.next === "";
  $("#page-label").textContent = `page ${list.page + 1}`;
}

function outcome(task: Task): string {
  if (task.status === TaskStatus.FAILED) return `${task.errorCode}: ${task.error}`;
  if (task.status === TaskStatus.FINISHED) return JSON.stringify(resultJson(task)) ?? "";
  if (task.progressMessage !== "" || task.progress > 0) return `${task.progress.toFixed(0)}% ${task.progressMessage}`;
  return task.lastError === "" ? "" : `last error: ${task.lastError}`;
}

function taskRow(task: Task): HTMLTableRowElement {
  const text = outcome(task);
  return h(
    "tr",
    { "data-task": task.id },
    cell(h("a", { href: `#/task/${task.id}`, class: "mono" }, task.id)),
    cell(badge(statusName(task.status))),
    cell(when(task.createdAt)),
    cell(`${task.attempts} / ${task.maxAttempts}`, true),
    cell(task.cost > 0 ? span(task.cost) : "–", true),
    cell(h("span", { class: "outcome", title: text }, text)),
  );
}

$("#list-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showList($<HTMLInputElement>("#list-handler").value.trim(), $<HTMLSelectElement>("#list-status").value);
});
$("#page-next").addEventListener("click", () => {
  if (list.next === "") return;
  list.tokens[list.page + 1] = list.next;
  list.page++;
  void loadTasks();
});
$("#page-prev").addEventListener("click", () => {
  if (list.page === 0) return;
  list.page--;
  void loadTasks();
});

// --- Create a task.

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const handler = $<HTMLInputElement>("#create-handler").value.trim();
  let params: unknown;
  try {
    params = JSON.parse($<HTMLTextAreaElement>("#create-params").value.trim() || "{}");
  } catch {
    params = undefined;
  }
  if (typeof params !== "object" || params === null || Array.isArray(params)) {
    showError("create", new ConnectError('params must be a JSON object, like {"name": "world"}', Code.InvalidArgument));
    return;
  }
  try {
    const { taskId } = await tasks.createTask({ handler, params: params as Record<string, never> });
    clearError("create");
    location.hash = `#/task/${taskId}`;
    void poll();
  } catch (err) {
    showError("create", err);
  }
});

// --- One task, followed live.

interface Open {
  id: string;
  task: Task | undefined;
  /** States seen, in order, with the actions taken ("retry", "cancel"). */
  history: string[];
  state: "live" | "ended" | "gone" | "reconnecting";
  watch: AbortController;
  confirmDelete: number;
}

let open: Open | undefined;
const panel = $("#task");

function record(o: Open, entry: string): void {
  if (o.history[o.history.length - 1] !== entry) o.history.push(entry);
}

function follow(o: Open): void {
  o.watch.abort();
  const watch = new AbortController();
  o.watch = watch;
  void (async () => {
    let backoff = 500;
    while (!watch.signal.aborted) {
      try {
        o.state = "live";
        renderTask();
        for await (const { task } of tasks.watchTask({ taskId: o.id }, { signal: watch.signal })) {
          // A deleted task's last message has no status of its own; NOT_FOUND follows.
          if (watch.signal.aborted || task === undefined || task.status === TaskStatus.UNSPECIFIED) continue;
          clearError("watch");
          o.task = task;
          record(o, statusName(task.status));
          renderTask();
          backoff = 500;
        }
        if (watch.signal.aborted) return;
        o.state = "ended"; // the stream ends after the terminal state
        renderTask();
        return;
      } catch (err) {
        if (watch.signal.aborted) return;
        if (ConnectError.from(err).code === Code.NotFound) {
          o.state = "gone";
          renderTask();
          return;
        }
        o.state = "reconnecting";
        showError("watch", err);
        renderTask();
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  })();
}

function openTask(id: string): void {
  if (open?.id === id) return;
  closeTask();
  open = { id, task: undefined, history: [], state: "live", watch: new AbortController(), confirmDelete: 0 };
  follow(open);
  panel.hidden = false;
}

function closeTask(): void {
  open?.watch.abort();
  open = undefined;
  panel.hidden = true;
  panel.replaceChildren();
  delete panel.dataset.status;
}

function field(name: string, label: string, value: Child): HTMLElement[] {
  return [h("dt", {}, label), h("dd", { "data-field": name }, value)];
}

function renderTask(): void {
  if (!open) return;
  const { id, task, state } = open;
  const status = state === "gone" ? (task ? "DELETED" : "NOT_FOUND") : task ? statusName(task.status) : "…";
  panel.dataset.status = status;
  panel.dataset.state = state;
  const live = { live: "live", ended: "ended", gone: "not found", reconnecting: "reconnecting…" }[state];
  const canCancel = task && [TaskStatus.QUEUED, TaskStatus.STARTED, TaskStatus.SCHEDULED].includes(task.status);
  const canRetry = task && [TaskStatus.FAILED, TaskStatus.CANCELED].includes(task.status);
  const button = (action: string, label: string, enabled: boolean | undefined) => {
    const b = h("button", { type: "button", "data-action": action }, label);
    b.disabled = !enabled || state === "gone";
    return b;
  };
  const rows: HTMLElement[] = [
    ...field("status", "Status", badge(status)),
    ...field("handler", "Handler", task?.handler),
    ...field("attempts", "Attempts", task && `${task.attempts} / ${task.maxAttempts}`),
    ...field("created", "Created", when(task?.createdAt)),
    ...field("started", "Started", when(task?.startedAt)),
    ...field("ended", "Ended", when(task?.endedAt)),
    ...field("cost", "Cost", task && task.cost > 0 ? span(task.cost) : "–"),
    ...field("worker", "Worker", task?.worker || "–"),
  ];
  if (task?.scheduledFor) rows.push(...field("scheduled", "Due", when(task.scheduledFor)));
  if (task && (task.progress > 0 || task.progressMessage !== "")) {
    const bar = h("progress", { max: "100", value: String(Math.min(100, Math.max(0, task.progress))) });
    rows.push(
      ...field(
        "progress",
        "Progress",
        h(
          "span",
          { class: "progress" },
          bar,
          ` ${task.progress.toFixed(0)}%`,
          task.progressMessage && ` ${task.progressMessage}`,
        ),
      ),
    );
  }
  if (task?.lastError && task.status !== TaskStatus.FAILED) rows.push(...field("last-error", "Last error", task.lastError));

  const body: Child[] = [h("dl", {}, ...rows)];
  if (task) body.push(h("h3", {}, "Params"), h("pre", { "data-field": "params" }, json(task.params ?? {})));
  if (task?.status === TaskStatus.FINISHED)
    body.push(h("h3", {}, "Result"), h("pre", { "data-field": "result" }, json(resultJson(task))));
  if (task?.status === TaskStatus.FAILED) {
    body.push(h("h3", {}, "Error"), h("pre", { "data-field": "error", class: "error" }, `${task.errorCode}: ${task.error}`));
  }
  body.push(h("h3", {}, "History"), h("ol", { class: "history" }, ...open.history.map((entry) => h("li", {}, entry))));

  const confirming = open.confirmDelete > Date.now();
  panel.replaceChildren(
    h(
      "div",
      { class: "panel-head" },
      h("h2", {}, "Task ", h("code", {}, id)),
      h("span", { class: `pill ${state}` }, live),
      h("a", { href: "#/", class: "close", title: "Close" }, "×"),
    ),
    h(
      "div",
      { class: "actions" },
      button("cancel", "Cancel", canCancel),
      button("retry", "Retry", canRetry),
      button("delete", confirming ? "Really delete?" : "Delete", task !== undefined),
    ),
    ...(body.filter(Boolean) as Node[]),
  );
}

panel.addEventListener("click", async (event) => {
  const action = (event.target as Element).closest<HTMLButtonElement>("button[data-action]")?.dataset.action;
  const o = open;
  if (!action || !o) return;
  try {
    if (action === "cancel") {
      const { task } = await tasks.cancelTask({ taskId: o.id });
      record(o, "cancel");
      if (task) o.task = task;
      renderTask();
      if (o.state !== "live") follow(o); // follow it to CANCELED
    } else if (action === "retry") {
      const { task } = await tasks.retryTask({ taskId: o.id });
      record(o, "retry");
      if (task) {
        o.task = task;
        record(o, statusName(task.status));
      }
      follow(o); // the previous stream ended with the task
    } else if (action === "delete") {
      if (o.confirmDelete <= Date.now()) {
        // Two clicks within 3 s: a slip of the mouse deletes nothing.
        o.confirmDelete = Date.now() + 3000;
        renderTask();
        setTimeout(renderTask, 3100);
        return;
      }
      o.confirmDelete = 0;
      await tasks.deleteTask({ taskId: o.id });
      o.watch.abort();
      record(o, "deleted");
      o.state = "gone";
      renderTask();
    }
    clearError(action);
    void poll();
    if (list.handler !== "") void loadTasks();
  } catch (err) {
    showError(action, err);
  }
});

function route(): void {
  const match = /^#\/task\/([0-9A-Fa-f]{20})$/.exec(location.hash);
  if (match?.[1]) openTask(match[1].toUpperCase());
  else closeTask();
}

// --- Bearer token: kept for this tab only (sessionStorage).

const tokenInput = $<HTMLInputElement>("#token");
tokenInput.value = token;

function useToken(value: string): void {
  token = value;
  if (token === "") sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
  tokenInput.value = token;
  void poll();
  if (list.handler !== "") void loadTasks();
  if (open && open.state !== "live") follow(open);
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  useToken(tokenInput.value.trim());
});
$("#token-clear").addEventListener("click", () => useToken(""));

document.addEventListener("visibilitychange", () => void poll());
window.addEventListener("hashchange", route);
route();
void poll();
mountSchedules(transport, { after: $("#workers"), showError, clearError });
