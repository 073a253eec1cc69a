/**
 * The queue table's flow columns: a handler's limits (SetQueueLimits), whether it is paused, how
 * many queued tasks are held back, and its Pause/Resume button (AdminService.PauseQueue and
 * ResumeQueue). Buttons carry `data-flow` ("pause" or "resume") and `data-queue` (the handler).
 */
import type { Client } from "@connectrpc/connect";
import type { AdminService, QueueInfo } from "../gen/baichuan/v1/admin_pb.js";
import { el } from "./dom.js";

/** `5/s (burst 10), 4 running, 2 per key`, or `none`. */
export function limitsText(q: QueueInfo): string {
  const parts: string[] = [];
  // Four significant digits: a slow rate (0.0001/s, one start in 2.8 h) must not read as 0/s.
  if (q.ratePerSecond > 0) parts.push(`${Number(q.ratePerSecond.toPrecision(4))}/s${q.burst > 0 ? ` (burst ${q.burst})` : ""}`);
  if (q.maxRunning > 0) parts.push(`${q.maxRunning} running`);
  if (q.maxRunningPerKey > 0) parts.push(`${q.maxRunningPerKey} per key`);
  return parts.length > 0 ? parts.join(", ") : "none";
}

/** The limits cell's content. */
export function limitsCell(q: QueueInfo): HTMLElement {
  const text = limitsText(q);
  return el("span", { class: text === "none" ? "zero" : "", "data-field": "limits", title: "Limits (0 or unset: none)" }, text);
}

/** The flow cell's content: paused or running, tasks held back, and the button that flips it. */
export function flowCell(q: QueueInfo): HTMLElement {
  const state = el(
    "span",
    { class: `badge ${q.paused ? "paused" : "flowing"}`, "data-field": "paused" },
    q.paused ? "paused" : "running",
  );
  // Tasks held back: shown only when there are some (the table is wide enough as it is).
  const held = el("span", { "data-field": "held", title: "Queued tasks held back by a limit or the pause" }, `${q.held} held`);
  held.hidden = q.held === 0n;
  const action = q.paused ? "resume" : "pause";
  const button = el(
    "button",
    { type: "button", class: "small", "data-flow": action, "data-queue": q.handler },
    q.paused ? "Resume" : "Pause",
  );
  return el("span", { class: "flow" }, state, held, button);
}

/** Pause or resume a queue from its button; `done` is called after (to refresh), `report` with any error. */
export function onFlowClick(
  admin: Client<typeof AdminService>,
  table: HTMLElement,
  done: () => void,
  report: (err: unknown) => void,
): void {
  table.addEventListener("click", async (event) => {
    const button = (event.target as Element).closest<HTMLButtonElement>("button[data-flow]");
    const handler = button?.dataset.queue;
    if (!button || !handler) return;
    button.disabled = true;
    try {
      if (button.dataset.flow === "pause") await admin.pauseQueue({ handler });
      else await admin.resumeQueue({ handler });
      report(undefined);
    } catch (err) {
      report(err);
    } finally {
      button.disabled = false;
      done();
    }
  });
}
