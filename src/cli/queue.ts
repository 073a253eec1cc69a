/**
 * `baichuan queue ACTION HANDLER`: a handler's queue. `stats` prints its runs per minute
 * (AdminService.GetQueueSeries) as a table, oldest minute first. Each action is one entry of
 * ACTIONS; the command's help is built from them.
 */
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { GetQueueSeriesResponseSchema, type QueuePoint } from "../../gen/baichuan/v1/admin_pb.js";
import { type CommandSpec, parseNumber, UsageError } from "./args.js";
import { type Context, callOptions, EXIT } from "./context.js";
import { formatDuration, jsonOf, table } from "./format.js";

/** The most minutes the server keeps (GetQueueSeries refuses more). */
const MAX_MINUTES = 1440;

interface Action {
  summary: string;
  run(ctx: Context, handler: string): Promise<number>;
}

const ACTIONS: Record<string, Action> = {
  stats: {
    summary: "runs per minute: finished, failed, run time p50/p95/p99 (--minutes, default 60)",
    run: runStats,
  },
};

export const QUEUE_COMMAND: CommandSpec & { run(ctx: Context): Promise<number> } = {
  args: "stats HANDLER",
  summary: "a handler's runs per minute over the last hour (or --minutes N)",
  description: [
    "Actions:",
    ...Object.entries(ACTIONS).map(([name, a]) => `  ${name.padEnd(6)}  ${a.summary}`),
    `Minutes are UTC, oldest first, the current (partial) one last; kept ${MAX_MINUTES / 60} hours.`,
    "Run times are read off a histogram: within about 9%.",
  ].join("\n"),
  positionals: ["ACTION", "HANDLER"],
  options: {
    minutes: { type: "string", value: "N", help: `minutes to show, ending now (default 60, at most ${MAX_MINUTES})` },
  },
  run(ctx) {
    const [action, handler] = ctx.positionals as [string, string];
    if (!Object.hasOwn(ACTIONS, action)) {
      throw new UsageError(`unknown action '${action}' (one of: ${Object.keys(ACTIONS).join(", ")})`);
    }
    return ACTIONS[action]!.run(ctx, handler);
  },
};

async function runStats(ctx: Context, handler: string): Promise<number> {
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
