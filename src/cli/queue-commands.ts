/**
 * `baichuan queue pause|resume|limits HANDLER`: an operator's hold on a handler's queue, through
 * AdminService (PauseQueue, ResumeQueue, SetQueueLimits). Every process obeys at once.
 */
import { create } from "@bufbuild/protobuf";
import { type QueueInfo, QueueInfoSchema, type QueueLimits, QueueLimitsSchema } from "../../gen/baichuan/v1/admin_pb.js";
import { type CommandSpec, parseNumber, UsageError } from "./args.js";
import { type Context, callOptions, EXIT } from "./context.js";
import { jsonOf, limitsText } from "./format.js";

/** Largest value of a limit (the server refuses more). */
const MAX_LIMIT = 1_000_000;

/** The limit options and the QueueLimits field each sets. */
const LIMIT_OPTIONS = {
  rate: "ratePerSecond",
  burst: "burst",
  "max-running": "maxRunning",
  "max-running-per-key": "maxRunningPerKey",
} as const satisfies Record<string, keyof Omit<QueueLimits, "$typeName">>;

const ACTIONS = ["pause", "resume", "limits"] as const;

export const QUEUE_COMMANDS: Record<string, CommandSpec & { run(ctx: Context): Promise<number> }> = {
  queue: {
    args: "ACTION HANDLER",
    summary: "pause, resume or limit a handler's queue (ACTION: pause, resume, limits)",
    description:
      "pause: no process starts the handler's tasks (new ones are accepted and stay QUEUED; running ones finish).\n" +
      "resume: they start again at once.\n" +
      "limits: set the limits given (the others keep their values; 0 removes one) and print them; with no\n" +
      "option, only print them. Every process obeys a change at once; it wins over limits given in code.",
    positionals: ["ACTION", "HANDLER"],
    options: {
      rate: { type: "string", value: "N", help: "most task starts per second, across every process (0.5: one every 2 s)" },
      burst: { type: "string", value: "N", help: "most starts at once after an idle time (default: the rate, at least 1)" },
      "max-running": { type: "string", value: "N", help: "most tasks running at once, across every process" },
      "max-running-per-key": { type: "string", value: "N", help: "most tasks of one concurrency key running at once" },
    },
    run: runQueue,
  },
};

async function runQueue(ctx: Context): Promise<number> {
  const [action, handler] = ctx.positionals as [string, string];
  if (!(ACTIONS as readonly string[]).includes(action)) {
    throw new UsageError(`'${action}' is not one of ${ACTIONS.join(", ")}`);
  }
  const given = limitOptions(ctx);
  if (action !== "limits" && Object.keys(given).length > 0) {
    throw new UsageError(`${action} takes no limit options (see baichuan queue limits)`);
  }
  let queue: QueueInfo | undefined;
  if (action === "pause") queue = (await ctx.admin.pauseQueue({ handler }, callOptions(ctx))).queue;
  else if (action === "resume") queue = (await ctx.admin.resumeQueue({ handler }, callOptions(ctx))).queue;
  else {
    const current = await currentQueue(ctx, handler);
    if (Object.keys(given).length === 0) queue = current;
    else {
      // SetQueueLimits replaces every limit: the ones not given keep their current values.
      const limits = create(QueueLimitsSchema, {
        ratePerSecond: current.ratePerSecond,
        burst: current.burst,
        maxRunning: current.maxRunning,
        maxRunningPerKey: current.maxRunningPerKey,
        ...given,
      });
      queue = (await ctx.admin.setQueueLimits({ handler, limits }, callOptions(ctx))).queue;
    }
  }
  const q = queue ?? create(QueueInfoSchema, { handler });
  if (ctx.json) ctx.io.stdout.write(`${JSON.stringify(jsonOf(QueueInfoSchema, q), null, 2)}\n`);
  else ctx.io.stdout.write(`${describeQueue(q)}\n`);
  return EXIT.OK;
}

/** The limit options given, checked, as QueueLimits fields. */
function limitOptions(ctx: Context): Partial<Record<(typeof LIMIT_OPTIONS)[keyof typeof LIMIT_OPTIONS], number>> {
  const out: Partial<Record<(typeof LIMIT_OPTIONS)[keyof typeof LIMIT_OPTIONS], number>> = {};
  for (const [option, field] of Object.entries(LIMIT_OPTIONS)) {
    const whole = option !== "rate";
    const n = parseNumber(
      option,
      ctx.values[option] as string | undefined,
      (v) => v >= 0 && v <= MAX_LIMIT && (!whole || Number.isInteger(v)),
      `${whole ? "a whole number" : "a number"} from 0 (no limit) to ${MAX_LIMIT}`,
    );
    if (n !== undefined) out[field] = n;
  }
  return out;
}

/** The queue as ListQueues shows it; all zeros when it is not listed (no task was ever queued). */
async function currentQueue(ctx: Context, handler: string): Promise<QueueInfo> {
  const { queues } = await ctx.admin.listQueues({}, callOptions(ctx));
  return queues.find((q) => q.handler === handler) ?? create(QueueInfoSchema, { handler });
}

/** `/m/f  paused, 5/s burst 10: 12 queued (12 held), 0 running` */
function describeQueue(q: QueueInfo): string {
  const limits = limitsText(q);
  return `${q.handler}  ${limits === "-" ? "no limits" : limits}: ${q.queued} queued (${q.held} held), ${q.started} running`;
}
