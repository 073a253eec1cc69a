/**
 * CORS (http/cors.ts): the allowed origins setting, and what a request from a browser is answered,
 * on a stand-in request and response (no listener). dashboard.test.ts and protocol.test.ts call a
 * real server from other origins.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { describe, expect, it } from "vitest";
import { applyCors, parseCorsOrigins } from "../../src/http/cors.js";

describe("parseCorsOrigins", () => {
  it("takes comma-separated origins and *, trimming and dropping empty ones", () => {
    expect(parseCorsOrigins(undefined)).toEqual([]);
    expect(parseCorsOrigins("")).toEqual([]);
    expect(parseCorsOrigins(" https://app.example ,, http://localhost:3000,*")).toEqual([
      "https://app.example",
      "http://localhost:3000",
      "*",
    ]);
    expect(parseCorsOrigins("https://[::1]:8443")).toEqual(["https://[::1]:8443"]);
  });

  it.each([
    ["a path", "https://app.example/path"],
    ["a trailing slash", "https://app.example/"],
    ["no scheme", "app.example"],
    ["another scheme", "ftp://app.example"],
    ["a default port written out", "https://app.example:443"],
    ["upper case", "https://App.example"],
    ["a query", "https://app.example?x=1"],
    ["credentials", "https://user@app.example"],
  ])("refuses %s (%s), quoting it", (_case, origin) => {
    expect(() => parseCorsOrigins(`https://ok.example,${origin}`)).toThrow(
      `${JSON.stringify(origin)} is not an origin: expected scheme://host[:port] (http or https, no path), or *`,
    );
  });

  it("quotes at most 100 characters of a bad origin", () => {
    const long = `https://x/${"p".repeat(300)}`;
    expect(() => parseCorsOrigins(long)).toThrow(`"${long.slice(0, 100)}" is not an origin`);
  });
});

interface Answer {
  handled: boolean;
  status?: number;
  headers: Record<string, string | number>;
  body: string;
}

/** Apply the policy to a request with these headers; what was answered or set. */
function cors(origins: string[], method: string, headers: Record<string, string>): Answer {
  const answer: Answer = { handled: false, headers: {}, body: "" };
  const req = { method, headers } as unknown as IncomingMessage;
  const res = {
    setHeader(name: string, value: string) {
      answer.headers[name.toLowerCase()] = value;
    },
    writeHead(status: number, fields: Record<string, string | number>) {
      answer.status = status;
      for (const [k, v] of Object.entries(fields)) answer.headers[k.toLowerCase()] = v;
    },
    end(text?: string) {
      answer.body = text ?? "";
    },
  } as unknown as ServerResponse;
  answer.handled = applyCors(req, res, origins);
  return answer;
}

const APP = "https://app.example";
const PREFLIGHT = { origin: APP, "access-control-request-method": "POST", "access-control-request-headers": "content-type" };

describe("applyCors", () => {
  it("does nothing without configured origins, or for a request without an Origin", () => {
    expect(cors([], "POST", { origin: APP })).toEqual({ handled: false, headers: {}, body: "" });
    expect(cors([], "OPTIONS", PREFLIGHT)).toEqual({ handled: false, headers: {}, body: "" });
    expect(cors([APP], "POST", {})).toEqual({ handled: false, headers: {}, body: "" });
  });

  it("an allowed origin's request goes on, with the headers a page needs to read the answer", () => {
    const a = cors([APP], "POST", { origin: APP });
    expect(a.handled).toBe(false);
    expect(a.status).toBeUndefined();
    expect(a.headers["access-control-allow-origin"]).toBe(APP);
    expect(a.headers.vary).toBe("Origin");
    const exposed = String(a.headers["access-control-expose-headers"]).toLowerCase().split(", ");
    expect(exposed).toEqual(expect.arrayContaining(["grpc-status", "grpc-message", "grpc-encoding", "x-request-id"]));
    expect(a.headers["access-control-allow-credentials"]).toBeUndefined();
  });

  it("an allowed origin's preflight is answered here: 204 with the methods, headers and max age", () => {
    const a = cors([APP], "OPTIONS", PREFLIGHT);
    expect(a.handled).toBe(true);
    expect(a.status).toBe(204);
    expect(a.headers["access-control-allow-origin"]).toBe(APP);
    expect(String(a.headers["access-control-allow-methods"]).split(", ")).toEqual(expect.arrayContaining(["POST", "GET"]));
    const allowed = String(a.headers["access-control-allow-headers"]).toLowerCase().split(", ");
    expect(allowed).toEqual(
      expect.arrayContaining(["content-type", "connect-protocol-version", "x-grpc-web", "authorization", "x-request-id"]),
    );
    expect(a.headers["access-control-max-age"]).toBe("7200");
    expect(a.body).toBe("");
  });

  it("* allows any origin, echoing it", () => {
    const a = cors(["*"], "OPTIONS", { ...PREFLIGHT, origin: "http://elsewhere.example:8080" });
    expect(a.status).toBe(204);
    expect(a.headers["access-control-allow-origin"]).toBe("http://elsewhere.example:8080");
  });

  it("another origin's preflight is refused (403, saying why); its other requests go on without CORS headers", () => {
    const refused = cors([APP], "OPTIONS", { ...PREFLIGHT, origin: "https://evil.example" });
    expect(refused.handled).toBe(true);
    expect(refused.status).toBe(403);
    expect(refused.body).toBe("this origin may not call the API (BAICHUAN_CORS_ORIGINS)\n");
    expect(refused.headers["access-control-allow-origin"]).toBeUndefined();

    const plain = cors([APP], "POST", { origin: "https://evil.example" });
    expect(plain.handled).toBe(false);
    expect(plain.headers).toEqual({ vary: "Origin" });
  });

  it("an OPTIONS request that is no preflight (no Access-Control-Request-Method) goes on", () => {
    const a = cors([APP], "OPTIONS", { origin: APP });
    expect(a.handled).toBe(false);
    expect(a.headers["access-control-allow-origin"]).toBe(APP);
  });

  it("origins are compared exactly", () => {
    for (const origin of ["https://app.example:443", "http://app.example", "https://app.example.evil", "HTTPS://APP.EXAMPLE"]) {
      expect(cors([APP], "OPTIONS", { ...PREFLIGHT, origin }).status, origin).toBe(403);
    }
  });
});
