/**
 * The web dashboard at `/ui`: three static files (ui/index.html, ui/dist/app.js, ui/style.css)
 * read once when the server starts and served from memory. Only those names are answered; every
 * other path under `/ui/` is a 404 (request paths are never joined to the filesystem). The page
 * talks to the RPC API of the same origin, which checks bearer tokens as usual; the files need none.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The strictest policy the page runs under: its own script and style, RPCs to its own origin. */
export const DASHBOARD_CSP =
  "default-src 'self'; connect-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** URL name under /ui/ -> file under ui/, and its content type. */
const FILES: Record<string, [file: string, type: string]> = {
  "index.html": ["index.html", "text/html; charset=utf-8"],
  "app.js": ["dist/app.js", "text/javascript; charset=utf-8"],
  "style.css": ["style.css", "text/css; charset=utf-8"],
};

const COMMON_HEADERS = {
  "cache-control": "no-cache",
  "content-security-policy": DASHBOARD_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/** What the dashboard needs of an HTTP/1.1 or HTTP/2 request and response. */
export interface DashboardRequest {
  readonly url?: string | undefined;
  readonly method?: string | undefined;
  readonly headers: IncomingHttpHeaders;
}
export interface DashboardResponse {
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  end(chunk?: Buffer | string): unknown;
}

/** True for `/ui`, `/ui/` and `/ui/<anything>` (query strings ignored). */
export function isDashboardPath(url: string | undefined): boolean {
  const path = pathOf(url);
  return path === "/ui" || path.startsWith("/ui/");
}

/** Where ui/ is: two levels up from src/http/ when run from the sources, three from dist/src/http/. */
function findUiDir(): string | undefined {
  for (const rel of ["../../ui/", "../../../ui/"]) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(join(dir, "index.html"))) return dir;
  }
  return undefined;
}

/** Read the dashboard's files (once). A file that is missing (ui/dist not built) answers 503. */
function loadAssets(uiDir: string | undefined): Map<string, Asset | undefined> {
  const assets = new Map<string, Asset | undefined>();
  for (const [name, [file, type]] of Object.entries(FILES)) {
    let body: Buffer | undefined;
    try {
      if (uiDir !== undefined) body = readFileSync(join(uiDir, file));
    } catch {
      body = undefined;
    }
    const etag = body && `"${createHash("sha1").update(body).digest("base64url")}"`;
    assets.set(name, body && etag ? { body, type, etag } : undefined);
  }
  return assets;
}

/**
 * A request handler for the dashboard's paths: GET or HEAD of `/ui`, `/ui/` (the page),
 * `/ui/index.html`, `/ui/app.js`, `/ui/style.css`; 404 for any other path, 405 for other methods.
 */
export function dashboardHandler(options: { uiDir?: string } = {}) {
  const assets = loadAssets(options.uiDir ?? findUiDir());
  return function serveDashboard(req: DashboardRequest, res: DashboardResponse): void {
    const path = pathOf(req.url);
    const name = path === "/ui" || path === "/ui/" ? "index.html" : path.slice("/ui/".length);
    if (!Object.hasOwn(FILES, name)) {
      reply(res, 404, "not found\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      reply(res, 405, "method not allowed\n", { allow: "GET, HEAD" });
      return;
    }
    const asset = assets.get(name);
    if (!asset) {
      reply(res, 503, "the dashboard is not built: run `npm run build:ui`\n");
      return;
    }
    const headers = { ...COMMON_HEADERS, "content-type": asset.type, etag: asset.etag };
    if (req.headers["if-none-match"] === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, "content-length": asset.body.length });
    res.end(req.method === "HEAD" ? undefined : asset.body);
  };
}

/**
 * Wrap the server's fallback handler: dashboard paths go to the dashboard, everything else to
 * `next` (the legacy JSON bridge).
 */
export function withDashboard<Req extends DashboardRequest, Res extends DashboardResponse>(
  next: (req: Req, res: Res) => unknown,
  dashboard = dashboardHandler(),
): (req: Req, res: Res) => void {
  return (req, res) => {
    if (isDashboardPath(req.url)) dashboard(req, res);
    else void next(req, res);
  };
}

function reply(res: DashboardResponse, status: number, text: string, extra: OutgoingHttpHeaders = {}): void {
  res.writeHead(status, {
    ...COMMON_HEADERS,
    ...extra,
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** The path of a request target, without query or fragment; as sent (no normalization). */
function pathOf(url: string | undefined): string {
  const raw = url ?? "";
  const end = raw.search(/[?#]/);
  return end === -1 ? raw : raw.slice(0, end);
}
