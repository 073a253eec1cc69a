/**
 * The Lua scripts (lua/*.lua) as Redis runs them, and the codes they answer with.
 *
 * A script's text is its first line (`#!lua`, with `flags=allow-oom` for the scripts that run or end
 * work Redis already holds), then the constants it shares with TypeScript (TAG_LENGTH, its CODE
 * table), then the library files it names on `-- @include a, b` lines (lua/lib/, each once, those
 * they include first), then the script. The `#!lua` line makes Redis refuse any key or shard channel
 * outside the slot of the script's declared keys, so on a Cluster every script is checked to touch
 * one slot, by the server itself.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { TAG_LENGTH } from "./keys.js";

const LUA_DIR = new URL("./lua/", import.meta.url);

/**
 * What each script answers, by name: one table for Lua (its `CODE`) and TypeScript. A script with
 * a batch answers one code per item.
 */
export const CODES = {
  create: {
    /** A new task. */
    NEW: 0,
    /** A unique create found its live twin: the id is the twin's. */
    UNIQUE_HIT: 1,
    /** The idempotency key was used before with these params: the id is what that create answered. */
    REPLAYED_NEW: 2,
    /** The same, when that first create had found a live twin. */
    REPLAYED_UNIQUE_HIT: 3,
    /** The drawn id is taken: draw another. */
    ID_TAKEN: -1,
    /** The queue holds as many tasks as it may. */
    QUEUE_FULL: -2,
    /** The idempotency key was used before with other params. */
    KEY_REUSED: -3,
  },
  finish: {
    /** The task was deleted, or is no longer this run's: nothing changed. */
    IGNORED: 0,
    ENDED: 1,
    /** Failed with attempts left: scheduled for a retry. */
    RETRY: 2,
    /** Back at the front of its queue (the worker shut down). */
    REQUEUED: 3,
    /** Ended canceled (its cancel was asked for). */
    CANCELED: 4,
  },
  cancel: { NOT_FOUND: 0, CANCELED: 1, SIGNALED: 2, ALREADY_CANCELED: 3, ALREADY_ENDED: 4 },
  retry: { NOT_FOUND: 0, QUEUED: 1, WRONG_STATUS: 2, UNIQUE_TAKEN: 3 },
  delete: { NOT_FOUND: 0, DELETED: 1 },
  progress: { IGNORED: 0, RECORDED: 1 },
} as const;

/**
 * Why a fetch started fewer tasks than it asked for while tasks stay queued (lua/lib/limits.lua's
 * `HOLD`, given to every script): NONE, a rate limit (the bucket has no whole token yet), a running
 * limit (max_running tasks run), or a pause.
 */
export const HOLD = { NONE: 0, RATE: 1, MAX_RUNNING: 2, PAUSED: 3 } as const;

/** A script as run: its text and the SHA-1 EVALSHA names it by. */
export interface LuaScript {
  lua: string;
  sha: string;
}

export const SCRIPTS = {
  create: load("create"),
  retry: load("retry"),
  fetch: load("fetch"),
  finish: load("finish"),
  sweep: load("sweep"),
  cancel: load("cancel"),
  delete: load("delete"),
  progress: load("progress"),
  renew: load("renew"),
  heartbeat: load("heartbeat"),
  reclaim: load("reclaim"),
  "set-limits": load("set-limits"),
  "queue-flow": load("queue-flow"),
};

export type ScriptName = keyof typeof SCRIPTS;

function load(name: string): LuaScript {
  const source = readFileSync(new URL(`${name}.lua`, LUA_DIR), "utf8");
  const shebang = source.startsWith("#!lua") ? source.slice(0, source.indexOf("\n")) : "#!lua";
  const body = source.startsWith("#!lua") ? source.slice(shebang.length + 1) : source;
  const codes = CODES[name as keyof typeof CODES];
  const constants = [`local TAG_LENGTH = ${TAG_LENGTH}`, `local HOLD = ${luaTable(HOLD)}`];
  if (codes) constants.push(`local CODE = ${luaTable(codes)}`);
  const libs: string[] = [];
  include(body, libs, new Set());
  const lua = [shebang, ...constants, ...libs, body].join("\n");
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

/** `{A = 1, B = 2}` */
function luaTable(table: Record<string, number>): string {
  return `{${Object.entries(table)
    .map(([k, v]) => `${k} = ${v}`)
    .join(", ")}}`;
}

/** Append the library files `source` names (and theirs, first) to `out`, each once. */
function include(source: string, out: string[], seen: Set<string>): void {
  for (const [, list] of source.matchAll(/^-- @include (.+)$/gm)) {
    for (const name of list!.split(",").map((n) => n.trim())) {
      if (seen.has(name)) continue;
      seen.add(name);
      const lib = readFileSync(new URL(`lib/${name}.lua`, LUA_DIR), "utf8");
      include(lib, out, seen);
      out.push(lib);
    }
  }
}
