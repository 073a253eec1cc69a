/**
 * `baichuan queue stats HANDLER [--minutes N]` (an action of queue-commands.ts): a handler's runs per
 * minute (AdminService.GetQueueSeries) as a table, oldest minute first, with the window's total.
 */
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { GetQueueSeriesResponseSchema, type QueuePoint } from "../../gen/baichuan/v1/admin_pb.js";
import { type OptionSpec, parseNumber } from "./args.js";
import { type Context, callOptions, EXIT } from "./context.js";
import { formatDuration, jsonOf, table } from "./format.js";

/** The most minutes the server keeps (GetQueueSeries refuses more). */
const MAX_MINUTES = 1440;

/** The `--minutes` option of `queue stats`. */
export const STATS_OPTIONS: Record<string, OptionSpec> = {
  minutes: { type: "string", value: "N", help: `stats: minutes to show, ending now (default 60, at most ${MAX_MINUTES})` },
};

/** What `queue stats` prints, for the command's help. */
export const STATS_HELP =
  "stats: the handler's runs per minute (finished, failed, run time p50/p95/p99), UTC minutes, oldest first,\n" +
  `the current (partial) one last; kept ${MAX_MINUTES / 60} hours. Run times are read off a histogram: within about 9%.`;

/** `baichuan queue stats HANDLER [--minutes N]`. */
export async function runStats(ctx: Context, handler: string): Promise<number> {
  const minutes = parseNumber(
    "minutes",
    ctx.values.minutes as string | undefined,
    (n) => Number.isInteger(n) && n >= 1 && n <= MAX_MINUTES,
    `a whole number from 1 to ${MAX_MINUTES}`,
  );
  const res = await ctx.admin.getQueueSeries({ handler, minutes: minutes ?? 0 }, callOptions(ctx));
  if (ctx.json) {
    ctx.io.stdout.write(`${JSON.stringify(jsonOf(GetQueueSeriesResponseSchema, res), null, 2)}\n`);
    return EXIT.OK;
  }
  const rows = res.points.map((p) => [
    minuteText(p),
    String(p.finished),
    String(p.failed),
    runTime(p.runTimeP50),
    runTime(p.runTimeP95),
    runTime(p.runTimeP99),
  ]);
  const finished = res.points.reduce((n, p) => n + p.finished, 0n);
  const failed = res.points.reduce((n, p) => n + p.failed, 0n);
  ctx.io.stdout.write(
    `${table(["MINUTE (UTC)", "FINISHED", "FAILED", "P50", "P95", "P99"], rows, [false, true, true, true, true, true])}\n` +
      `${handler}: ${finished} finished, ${failed} failed in the last ${res.points.length} minutes\n`,
  );
  return EXIT.OK;
}

/** `2026-05-25 14:03`. */
function minuteText(p: QueuePoint): string {
  return p.minute ? new Date(timestampMs(p.minute)).toISOString().slice(0, 16).replace("T", " ") : "-";
}

function runTime(d: QueuePoint["runTimeP50"]): string {
  return d ? formatDuration(durationMs(d) / 1000) : "-";
}
