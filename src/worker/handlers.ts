/**
 * The handlers a process has: registered from code, or loaded from a handlers directory where each
 * module's exported functions become handlers (`handlers/demo_api.ts` exporting `ping` is
 * `/demo_api/ping`). A duplicate or invalid name fails at start-up.
 *
 * A handler may come with flow limits (`register(name, fn, { limits })`, or a module's `limits`
 * export: `export const limits = { ping: { maxRunning: 2 } }`). They are defaults: the worker writes
 * each one to Redis only where no value is stored yet, so a limit set at run time (SetQueueLimits)
 * wins over the code (see Worker.start).
 */
import { readdir } from "node:fs/promises";
import { basename, extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { JsonObject, QueueLimits } from "../core/domain.js";
import { checkQueueLimits, isHandlerName } from "../core/validate.js";
import type { Logger } from "../ops/log.js";

/** What a handler gets besides its params. */
export interface HandlerContext {
  /** Id of the task being run; empty for a synchronous call over HTTP. */
  taskId: string;
  /** Handler path, `/module/function`. */
  handler: string;
  /** Fires when the task times out or the process shuts down; long handlers should honour it. */
  signal: AbortSignal;
  /** Logger whose lines carry the task id and handler. */
  log: Logger;
  /**
   * Report progress, 0 to 100, with an optional message (at most 1,000 characters): stored on the
   * task and streamed to its watchers. Reports made faster than Redis takes them are coalesced
   * (the latest wins); a failed write is dropped (progress is best effort). Resolves when written.
   * A synchronous call over HTTP has no task: there it does nothing.
   */
  progress(percent: number, message?: string): Promise<void>;
}

/** A handler: params in, JSON-serialisable data out. Throw BadParamsError for bad params. */
export type Handler = (params: JsonObject, ctx: HandlerContext) => unknown;

/** How a handler is registered. */
export interface HandlerOptions {
  /**
   * Flow limits written to Redis when the worker starts, each only where Redis holds no value yet
   * (default: none). A limit left out is not written; 0 is no limit.
   */
  limits?: Partial<QueueLimits>;
}

/** The name of a handler module's export that holds its handlers' limits, by export name. */
const LIMITS_EXPORT = "limits";

const MODULE_EXTENSIONS = new Set([".ts", ".js", ".mjs", ".mts"]);
const TYPESCRIPT = new Set([".ts", ".mts"]);

/**
 * Import a handler module. TypeScript needs a loader when this code runs built (dist/, plain
 * JavaScript): tsx when it is installed (registered once, at the first .ts module), else Node's
 * own type stripping where it has one (22.18+, 23.6+). Run from the sources, this file is
 * TypeScript itself: a loader is already there (tsx, vitest).
 */
async function importModule(file: string): Promise<Record<string, unknown>> {
  if (TYPESCRIPT.has(extname(file))) await loadTypeScript();
  try {
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    if ((err as { code?: unknown }).code !== "ERR_UNKNOWN_FILE_EXTENSION") throw err;
    throw new Error(
      "a TypeScript handler needs tsx installed next to this package (npm install tsx) or a Node.js that strips types (22.18+); or compile it to .js",
      { cause: err },
    );
  }
}

const FROM_SOURCES = import.meta.url.endsWith(".ts");
let typeScriptLoader: Promise<void> | undefined;

function loadTypeScript(): Promise<void> {
  if (FROM_SOURCES) return Promise.resolve();
  typeScriptLoader ??= import("tsx/esm/api").then(
    (tsx) => void tsx.register(),
    (err: unknown) => {
      // Not installed (an optional peer dependency): Node's type stripping, where there is one.
      if ((err as { code?: unknown }).code !== "ERR_MODULE_NOT_FOUND") throw err;
    },
  );
  return typeScriptLoader;
}

export class HandlerRegistry {
  private readonly handlers = new Map<string, Handler>();
  private readonly defaultLimits = new Map<string, Partial<QueueLimits>>();

  /** Register a handler; throws on an invalid or duplicate name, or invalid limits. */
  register(name: string, handler: Handler, options: HandlerOptions = {}): void {
    if (!isHandlerName(name)) {
      throw new Error(`invalid handler name ${JSON.stringify(name)}: expected /module/function (letters, digits, '_', '-', '.')`);
    }
    if (typeof handler !== "function") throw new Error(`handler ${name} is not a function`);
    if (this.handlers.has(name)) throw new Error(`handler ${name} is registered twice`);
    const limits = options.limits === undefined ? undefined : givenLimits(name, options.limits);
    this.handlers.set(name, handler);
    if (limits) this.defaultLimits.set(name, limits);
  }

  /** The limits a handler was registered with (only those given), or undefined. */
  limitsOf(name: string): Partial<QueueLimits> | undefined {
    return this.defaultLimits.get(name);
  }

  get(name: string): Handler | undefined {
    return this.handlers.get(name);
  }

  has(name: string): boolean {
    return this.handlers.has(name);
  }

  names(): string[] {
    return [...this.handlers.keys()].sort();
  }

  /**
   * Load every module of a directory: each exported function becomes `/<module>/<export>`.
   * Files starting with `_` or `.`, declaration files and tests are skipped. TypeScript modules
   * load through tsx when it is installed, else through Node's type stripping where it has one.
   */
  async loadDirectory(dir: string, log?: Logger): Promise<string[]> {
    const root = resolve(dir);
    const loaded: string[] = [];
    const files = (await readdir(root, { withFileTypes: true }))
      .filter((e) => e.isFile() && MODULE_EXTENSIONS.has(extname(e.name)))
      .map((e) => e.name)
      .filter((n) => !n.startsWith("_") && !n.startsWith(".") && !/\.d\.[mc]?ts$/.test(n) && !/\.test\.[mc]?[jt]s$/.test(n))
      .sort();
    // Check every module before registering any, so a bad one leaves the registry unchanged.
    const found: Array<[string, Handler, HandlerOptions]> = [];
    for (const file of files) {
      const moduleName = basename(file, extname(file));
      try {
        const mod = await importModule(resolve(root, file));
        const limits = moduleLimits(mod);
        for (const [exportName, value] of Object.entries(mod)) {
          if (typeof value !== "function" || exportName === "default") continue;
          const name = `/${moduleName}/${exportName}`;
          if (!isHandlerName(name))
            throw new Error(
              `invalid handler name ${JSON.stringify(name)}: expected /module/function (letters, digits, '_', '-', '.')`,
            );
          if (this.handlers.has(name) || found.some(([n]) => n === name)) throw new Error(`handler ${name} is registered twice`);
          found.push([name, value as Handler, limits[exportName] ? { limits: givenLimits(name, limits[exportName]) } : {}]);
        }
      } catch (err) {
        throw new Error(`${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    for (const [name, handler, options] of found) {
      this.register(name, handler, options);
      loaded.push(name);
    }
    log?.info("handlers loaded", { dir, handlers: loaded });
    return loaded;
  }
}

/** The limits given for a handler, checked (throws naming the handler), without those left out. */
function givenLimits(name: string, limits: unknown): Partial<QueueLimits> {
  let checked: QueueLimits;
  try {
    checked = checkQueueLimits(limits);
  } catch (err) {
    throw new Error(`handler ${name}: bad limits: ${err instanceof Error ? err.message : String(err)}`);
  }
  const given = limits as Partial<QueueLimits>;
  return Object.fromEntries(Object.entries(checked).filter(([key]) => given[key as keyof QueueLimits] !== undefined));
}

/**
 * A module's `limits` export (not a function: then it is a handler), by export name; each name must
 * be a handler the module exports.
 */
function moduleLimits(mod: Record<string, unknown>): Record<string, unknown> {
  const value = mod[LIMITS_EXPORT];
  if (value === undefined || typeof value === "function") return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`the '${LIMITS_EXPORT}' export must be an object of limits by handler export name`);
  }
  for (const name of Object.keys(value)) {
    if (typeof mod[name] !== "function" || name === "default") {
      throw new Error(`the '${LIMITS_EXPORT}' export names '${name}', which is not a handler of this module`);
    }
  }
  return value as Record<string, unknown>;
}
