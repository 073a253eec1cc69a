/**
 * The dashboard's "Last hour" section: for each handler, its runs per minute (finished and failed,
 * stacked bars) and run time percentiles (p50, p95, p99 lines) over the last 60 minutes, read with
 * AdminService.GetQueueSeries. Read again when a handler's ended runs change (the queue table's
 * totals), and at least every SERIES_MS as the window slides.
 */
import type { Client } from "@connectrpc/connect";
import type { AdminService, QueueInfo, QueuePoint } from "../gen/baichuan/v1/admin_pb.js";
import { barChart, lineChart } from "./charts.js";
import { el } from "./dom.js";

const SERIES_MS = 15_000;
const MINUTES = 60;

/** 0.5 ms, 2.5 ms, 850 ms, 4.2 s, 3.5 min: run times on an axis. */
function runTime(seconds: number): string {
  if (seconds === 0) return "0";
  if (seconds < 0.01) return `${Number((seconds * 1000).toFixed(1))} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${Number(seconds.toFixed(1))} s`;
  return `${Number((seconds / 60).toFixed(1))} min`;
}

const seconds = (d: QueuePoint["runTimeP50"]) => (d === undefined ? undefined : Number(d.seconds) + d.nanos / 1e9);

/** One handler's card: its two charts and the hour's totals. */
function card(handler: string, points: QueuePoint[]): HTMLElement {
  const minutes = points.map((p) => Number(p.minute?.seconds ?? 0n) * 1000);
  const finished = points.map((p) => Number(p.finished));
  const failed = points.map((p) => Number(p.failed));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const total = `${sum(finished).toLocaleString("en-US")} finished, ${sum(failed).toLocaleString("en-US")} failed`;
  const head = el("h3", {}, el("span", { class: "mono" }, handler), el("span", { class: "muted" }, ` ${total}`));
  // A handler without runs in the hour takes one line, not two empty charts.
  if (sum(finished) + sum(failed) === 0) return el("div", { class: "series-card idle", "data-handler": handler }, head);
  return el(
    "div",
    { class: "series-card", "data-handler": handler },
    head,
    barChart({
      title: `${handler}: runs ended per minute, last ${MINUTES} minutes`,
      minutes,
      series: [
        { name: "finished", values: finished },
        { name: "failed", values: failed },
      ],
      format: (v) => (Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(1)),
    }),
    lineChart({
      title: `${handler}: run time percentiles per minute, last ${MINUTES} minutes`,
      minutes,
      series: [
        { name: "p50", values: points.map((p) => seconds(p.runTimeP50)) },
        { name: "p95", values: points.map((p) => seconds(p.runTimeP95)) },
        { name: "p99", values: points.map((p) => seconds(p.runTimeP99)) },
      ],
      format: runTime,
    }),
  );
}

/** The section's view; `refresh` is called on every poll with the queues the queue table shows. */
export function seriesView(
  admin: Client<typeof AdminService>,
  container: HTMLElement,
  report: (err: unknown) => void,
): { refresh(queues: QueueInfo[]): Promise<void> } {
  let shown = "";
  let last = 0;
  let busy = false;
  return {
    async refresh(queues) {
      const handlers = queues.map((q) => q.handler);
      const names = queues.map((q) => `${q.handler} ${q.finishedTotal} ${q.failedTotal}`).join("\n");
      if (busy || (names === shown && performance.now() - last < SERIES_MS)) return;
      busy = true;
      try {
        const all = await Promise.all(handlers.map((handler) => admin.getQueueSeries({ handler, minutes: MINUTES })));
        container.replaceChildren(...handlers.map((handler, i) => card(handler, all[i]!.points)));
        container.dataset.loaded = String(Date.now());
        shown = names;
        last = performance.now();
        report(undefined);
      } catch (err) {
        report(err);
      } finally {
        busy = false;
      }
    },
  };
}
