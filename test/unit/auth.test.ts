/**
 * Bearer tokens (core/auth.ts): token entries and their handler patterns, the Authorization header,
 * grants, and what a limited token is told about tasks of other handlers.
 * (security.test.ts checks the same rules through every protocol and the legacy URLs.)
 */
import { describe, expect, it } from "vitest";
import { Authenticator, checkGrant, checkTaskGrant, taskNotFound, tokenSpecs } from "../../src/core/auth.js";
import { PermissionDeniedError, TaskNotFoundError, UnauthenticatedError } from "../../src/core/errors.js";

const FULL = "full-access-token-0123456789";
const LIMITED = "billing-only-token-abcdef";
const auth = new Authenticator([FULL, `${LIMITED}=/billing/*|/demo_api/ec*|/exact/one`]);
const bearer = (token: string) => `Bearer ${token}`;

/** The error `fn` throws. */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("nothing was thrown");
}

describe("without tokens", () => {
  it("is disabled and allows every request, with or without a header", () => {
    const open = new Authenticator([]);
    expect(open.enabled).toBe(false);
    for (const header of [undefined, null, "", "Bearer whatever", "garbage"]) {
      const grant = open.authenticate(header);
      expect(grant.allows("/any/handler")).toBe(true);
      expect(grant.limited).toBe(false);
    }
  });
});

describe("authenticate", () => {
  it("is enabled with at least one entry", () => {
    expect(auth.enabled).toBe(true);
  });

  it("a full token is granted every handler", () => {
    const grant = auth.authenticate(bearer(FULL));
    expect(grant.allows("/anything/at_all")).toBe(true);
    expect(grant.limited).toBe(false);
  });

  it("takes the scheme in any case and spaces around the token", () => {
    for (const header of [`bearer ${FULL}`, `BEARER ${FULL}`, `Bearer   ${FULL}`, `Bearer ${FULL}  `]) {
      expect(auth.authenticate(header).allows("/x/y")).toBe(true);
    }
  });

  it.each([
    ["no header", undefined],
    ["null", null],
    ["an empty header", ""],
    ["the token without the scheme", FULL],
    ["another scheme", `Basic ${FULL}`],
    ["the scheme alone", "Bearer"],
    ["two tokens", `Bearer ${FULL} ${FULL}`],
  ])("refuses %s: a bearer token is required", (_case, header) => {
    const err = thrown(() => auth.authenticate(header));
    expect(err).toBeInstanceOf(UnauthenticatedError);
    expect(err.message).toBe("a bearer token is required: send the header 'Authorization: Bearer <token>'");
  });

  it.each([
    ["a wrong token", "not-a-real-token-000000000"],
    ["a token one character longer", `${FULL}x`],
    ["a token one character shorter", FULL.slice(0, -1)],
    ["a token in another case", FULL.toUpperCase()],
    ["an entry's whole text", `${LIMITED}=/billing/*|/demo_api/ec*|/exact/one`],
  ])("refuses %s, without echoing it", (_case, token) => {
    const err = thrown(() => auth.authenticate(bearer(token)));
    expect(err).toBeInstanceOf(UnauthenticatedError);
    expect(err.message).toBe("the bearer token is not valid");
  });
});

describe("handler patterns", () => {
  const grant = auth.authenticate(bearer(LIMITED));

  it("a token with patterns is limited", () => {
    expect(grant.limited).toBe(true);
  });

  it.each(["/billing/charge", "/billing/refund.v2", "/demo_api/echo", "/demo_api/ec", "/exact/one"])("allows %s", (h) => {
    expect(grant.allows(h)).toBe(true);
  });

  it.each([
    "/demo_api/ping",
    "/billingx/charge", // `*` only after the slash
    "/exact/one_more", // no wildcard: the whole path
    "/exact/on",
    "/other/billing/x",
  ])("does not allow %s", (h) => {
    expect(grant.allows(h)).toBe(false);
  });

  it("`.` in a pattern is a dot, not any character", () => {
    const dotted = new Authenticator([`${LIMITED}=/m.v2/*`]).authenticate(bearer(LIMITED));
    expect(dotted.allows("/m.v2/f")).toBe(true);
    expect(dotted.allows("/mXv2/f")).toBe(false);
  });

  it("authorize() checks the handler too: PERMISSION_DENIED naming it", () => {
    expect(auth.authorize(bearer(LIMITED), "/billing/charge").limited).toBe(true);
    const err = thrown(() => auth.authorize(bearer(LIMITED), "/demo_api/ping"));
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect(err.message).toBe("this token may not use handler /demo_api/ping");
    expect(thrown(() => auth.authorize(undefined, "/billing/charge"))).toBeInstanceOf(UnauthenticatedError);
  });

  it("checkGrant refuses a handler the grant does not cover", () => {
    expect(() => checkGrant(grant, "/billing/charge")).not.toThrow();
    expect(thrown(() => checkGrant(grant, "/demo_api/ping"))).toBeInstanceOf(PermissionDeniedError);
  });
});

describe("tasks of other handlers", () => {
  const limited = auth.authenticate(bearer(LIMITED));
  const full = auth.authenticate(bearer(FULL));
  const task = { id: "AC3C301A7CA516EAF0F1", handler: "/demo_api/ping" };

  it("a limited token gets the same NOT_FOUND as for no task at all", () => {
    const err = thrown(() => checkTaskGrant(limited, task));
    expect(err).toBeInstanceOf(TaskNotFoundError);
    expect(err.message).toBe(taskNotFound(task.id, limited).message);
    expect(err.message).toBe("task AC3C301A7CA516EAF0F1 does not exist or is not one this token may see");
  });

  it("a full token, or no authentication, sees it; their not-found text says nothing of tokens", () => {
    expect(() => checkTaskGrant(full, task)).not.toThrow();
    expect(() => checkTaskGrant(undefined, task)).not.toThrow();
    expect(() => checkTaskGrant(limited, { ...task, handler: "/billing/charge" })).not.toThrow();
    expect(taskNotFound(task.id, full).message).toBe(
      "task AC3C301A7CA516EAF0F1 does not exist (never created, or expired after its TTL)",
    );
    expect(taskNotFound(task.id, undefined).message).toBe(taskNotFound(task.id, full).message);
  });
});

describe("token entries", () => {
  it.each([
    ["a token under 16 characters", "short-token"],
    ["a token with a space", "a token with spaces in it"],
    ["a token with a non-ASCII character", "tøken-0123456789abcdef"],
    ["a pattern that is not a handler path", `${FULL}=billing/*`],
    ["a pattern with a character outside handler names", `${FULL}=/billing/$x`],
    ["a pattern with three segments", `${FULL}=/a/b/c`],
    ["an empty pattern", `${FULL}=`],
  ])("refuse %s, naming the entry and not echoing the token", (_case, spec) => {
    const err = thrown(() => new Authenticator([FULL, spec]));
    expect(err.message).toMatch(/^auth token entry 2: /);
    expect(err.message).not.toContain(spec.split("=")[0]);
  });

  it("tokenSpecs takes comma-separated entries and a file's lines, dropping comments and blanks", () => {
    const file = ["# tokens", `${FULL}`, "", `  ${LIMITED}=/billing/*  # billing only`, "#disabled-token-0123456789"].join("\n");
    expect(tokenSpecs(` one-token-0123456789 ,, two-token-0123456789 `, file)).toEqual([
      "one-token-0123456789",
      "two-token-0123456789",
      FULL,
      `${LIMITED}=/billing/*`,
    ]);
    expect(tokenSpecs(undefined, undefined)).toEqual([]);
    expect(tokenSpecs("", "\n# nothing\n")).toEqual([]);
  });
});
