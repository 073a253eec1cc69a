/**
 * Optional bearer-token authentication, enforced on every RPC and legacy URL when tokens are
 * configured (the health check stays open).
 *
 * A token entry is `TOKEN` (every handler) or `TOKEN=PATTERN|PATTERN...` (only handlers matching a
 * pattern; `*` matches any run of characters, for example `/billing/*`). Entries come from
 * BAICHUAN_AUTH_TOKENS (comma-separated) or a token file (BAICHUAN_AUTH_TOKEN_FILE: one entry per
 * line, `#` starts a comment). Tokens are compared in constant time (SHA-256 digests compared with
 * timingSafeEqual, against every entry) and never appear in logs or error messages.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { PermissionDeniedError, TaskNotFoundError, UnauthenticatedError } from "./errors.js";

interface Entry {
  digest: Buffer;
  /** undefined: every handler. */
  patterns: RegExp[] | undefined;
}

/** What a request is allowed to do: every handler, or those matching its token's patterns. */
export interface Grant {
  allows(handler: string): boolean;
  /** True for a token limited to some handlers (see checkTaskGrant). */
  readonly limited?: boolean;
}

const ALL: Grant = { allows: () => true, limited: false };

export class Authenticator {
  private readonly entries: Entry[];

  /** `spec`: entries as described above; throws on a malformed entry (without echoing the token). */
  constructor(specs: string[]) {
    this.entries = specs.map((spec, i) => parseEntry(spec, i + 1));
  }

  /** True when at least one token is configured (otherwise every request is allowed). */
  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /**
   * Check an `Authorization` header. Returns the grant; throws UnauthenticatedError when the
   * header is missing, malformed or names no configured token.
   */
  authenticate(header: string | null | undefined): Grant {
    if (!this.enabled) return ALL;
    const m = /^Bearer +(\S+) *$/i.exec(header ?? "");
    if (!m) throw new UnauthenticatedError("a bearer token is required: send the header 'Authorization: Bearer <token>'");
    const digest = sha256(m[1]!);
    let found: Entry | undefined;
    for (const entry of this.entries) {
      // Every entry is compared, so the time taken does not tell which one matched.
      if (timingSafeEqual(entry.digest, digest) && !found) found = entry;
    }
    if (!found) throw new UnauthenticatedError("the bearer token is not valid");
    const patterns = found.patterns;
    return patterns ? { allows: (handler) => patterns.some((p) => p.test(handler)), limited: true } : ALL;
  }

  /** Authenticate and check the right to use `handler`. */
  authorize(header: string | null | undefined, handler: string): Grant {
    const grant = this.authenticate(header);
    checkGrant(grant, handler);
    return grant;
  }
}

/** Throw PermissionDeniedError unless the grant covers the handler. */
export function checkGrant(grant: Grant, handler: string): void {
  if (!grant.allows(handler)) throw new PermissionDeniedError(`this token may not use handler ${handler}`);
}

/**
 * Throw TaskNotFoundError unless the grant covers the task's handler. A task is looked up by id,
 * and a token limited to some handlers cannot tell a task of another handler from no task at all:
 * both answer NOT_FOUND ("no task this token may see"), with the same text (taskNotFound), so such
 * a token cannot learn which ids exist. (PERMISSION_DENIED stays for what names a handler: creating
 * a task, listing or emptying a queue.)
 */
export function checkTaskGrant(grant: Grant | undefined, task: { id: string; handler: string }): void {
  if (grant && !grant.allows(task.handler)) throw taskNotFound(task.id, grant);
}

/** The error for a task that does not exist, as `grant` is told it (see checkTaskGrant). */
export function taskNotFound(taskId: string, grant: Grant | undefined): TaskNotFoundError {
  return new TaskNotFoundError(taskId, grant?.limited === true);
}

/** Entries from BAICHUAN_AUTH_TOKENS (comma-separated) and a token file's text (one per line). */
export function tokenSpecs(envValue: string | undefined, fileText: string | undefined): string[] {
  const fromEnv = (envValue ?? "").split(",");
  const fromFile = (fileText ?? "").split("\n").map((line) => line.replace(/#.*$/, ""));
  return [...fromEnv, ...fromFile].map((s) => s.trim()).filter((s) => s !== "");
}

function parseEntry(spec: string, n: number): Entry {
  const eq = spec.indexOf("=");
  const token = eq < 0 ? spec : spec.slice(0, eq);
  if (!/^[\x21-\x7e]{16,}$/.test(token) || token.includes(",")) {
    throw new Error(`auth token entry ${n}: a token is at least 16 printable ASCII characters without spaces or commas`);
  }
  if (eq < 0) return { digest: sha256(token), patterns: undefined };
  const patterns = spec
    .slice(eq + 1)
    .split("|")
    .map((p) => p.trim());
  if (patterns.some((p) => !/^\/[A-Za-z0-9_.*-]*(\/[A-Za-z0-9_.*-]*)?$/.test(p))) {
    throw new Error(`auth token entry ${n}: patterns are handler paths with '*' wildcards, separated by '|', such as /billing/*`);
  }
  return { digest: sha256(token), patterns: patterns.map(globToRegExp) };
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`);
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}
