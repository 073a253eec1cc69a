/**
 * The handlers a process has: registered from code, or loaded from a handlers directory where each
 * module's exported functions become handlers (`handlers/demo_api.ts` exporting `ping` is
 * `/demo_api/ping`). A duplicate or invalid name fails at start-up.
 */
import { readdir } from "node:fs/promises";
import { basename, extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { JsonObject } from "../core/domain.js";
import { isHandlerName } from "../core/validate.js";
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

  /** Register a handler; throws on an invalid or duplicate name. */
  register(name: string, handler: Handler): void {
    if (!isHandlerName(name)) {
      throw new Error(`invalid handler name ${JSON.stringify(name)}: expected /module/function (letters, digits, '_', '-', '.')`);
    }
    if (typeof handler !== "function") throw new Error(`handler ${name} is not a function`);
    if (this.handlers.has(name)) throw new Error(`handler ${name} is registered twice`);
    this.handlers.set(name, handler);
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
    const found: Array<[string, Handler]> = [];
    for (const file of files) {
      const moduleName = basename(file, extname(file));
      try {
        const mod = await importModule(resolve(root, file));
        for (const [exportName, value] of Object.entries(mod)) {
          if (typeof value !== "function" || exportName === "default") continue;
          const name = `/${moduleName}/${exportName}`;
          if (!isHandlerName(name))
            throw new Error(
              `invalid handler name ${JSON.stringify(name)}: expected /module/function (letters, digits, '_', '-', '.')`,
            );
          if (this.handlers.has(name) || found.some(([n]) => n === name)) throw new Error(`handler ${name} is registered twice`);
          found.push([name, value as Handler]);
        }
      } catch (err) {
        throw new Error(`${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    for (const [name, handler] of found) {
      this.register(name, handler);
      loaded.push(name);
    }
    log?.info("handlers loaded", { dir, handlers: loaded });
    return loaded;
  }
}
