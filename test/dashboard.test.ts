/**
 * The dashboard at /ui, end to end: the real service (real redis-server, real listener, the demo
 * handlers) and Debian's Chromium driven by playwright-core. The service has a bearer token, so
 * the page's token field and its interceptor are exercised too.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect } from "node:http2";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../gen/baichuan/v1/admin_pb.js";
import { DASHBOARD_CSP } from "../src/http/dashboard.js";
import type { HandlerContext } from "../src/worker/handlers.js";
import { eventually, gate, startService, type TestService } from "./support/service.js";
import { storeOf } from "./support/store.js";

// The browser's globals, as the functions run in the page by page.evaluate use them (this file is
// type-checked without the DOM library).
interface PageElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
}
declare const document: { querySelector(selector: string): PageElement | null };
declare const location: { hash: string };
declare const sessionStorage: { getItem(key: string): string | null };

const TOKEN = "dashboard-test-token";
const HOLD = "/dash/hold";
const hold = gate();

/** Reports progress, then waits for the gate (or its abort: a cancel). */
async function held(_params: unknown, ctx: HandlerContext): Promise<{ released: true }> {
  await ctx.progress(40, "waiting for the gate");
  await new Promise<void>((resolve, reject) => {
    void hold.opened.then(resolve);
    ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
  });
  return { released: true };
}

let svc: TestService;
let browser: Browser;
let page: Page;
const requests: { url: string; authorization: string | undefined }[] = [];
const problems: string[] = []; // uncaught page errors and CSP violations

beforeAll(async () => {
  [svc, browser] = await Promise.all([
    // Concurrency 1: a held task keeps the ones after it queued.
    startService({ handlers: { [HOLD]: held }, worker: { concurrency: 1 }, authTokens: [TOKEN], scheduler: true }),
    chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu"] }),
  ]);
  page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.on("request", (r) => requests.push({ url: r.url(), authorization: r.headers().authorization }));
  page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (/Content[- ]Security[- ]Policy/i.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
});

afterAll(async () => {
  hold.open();
  await browser?.close();
  await svc?.close();
});

/** A raw GET (or other method) with the path sent exactly as given: no URL normalization. */
function raw(path: string, method = "GET"): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: svc.server.port, path, method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

const panel = () => page.locator("#task");
const field = (name: string) => page.locator(`#task [data-field="${name}"]`);
const history = () => page.locator("#task .history li").allTextContents();
const shownTaskId = () => /#\/task\/([0-9A-F]{20})$/.exec(page.url())?.[1] ?? "";

async function createFromForm(handler: string, params: string): Promise<string> {
  const before = shownTaskId();
  await page.fill("#create-handler", handler);
  await page.fill("#create-params", params);
  await page.click("#create-form button[type=submit]");
  await page.waitForFunction((old) => /^#\/task\/[0-9A-F]{20}$/.test(location.hash) && location.hash !== `#/task/${old}`, before);
  return shownTaskId();
}

async function openTask(id: string): Promise<void> {
  await page.evaluate((taskId) => {
    location.hash = `#/task/${taskId}`;
  }, id);
  await page.locator(`#task h2 code:text-is("${id}")`).waitFor();
}

describe("dashboard files", () => {
  it("serves index.html, app.js and style.css with CSP, nosniff, no-cache and their types", async () => {
    for (const [path, type] of [
      ["/ui", "text/html"],
      ["/ui/", "text/html"],
      ["/ui/index.html", "text/html"],
      ["/ui/app.js", "text/javascript"],
      ["/ui/style.css", "text/css"],
    ] as const) {
      const res = await fetch(svc.baseUrl + path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type"), path).toContain(type);
      expect(res.headers.get("content-security-policy"), path).toBe(DASHBOARD_CSP);
      expect(res.headers.get("x-content-type-options"), path).toBe("nosniff");
      expect(res.headers.get("cache-control"), path).toBe("no-cache");
      expect((await res.text()).length, path).toBeGreaterThan(100);
    }
    expect(DASHBOARD_CSP).toMatch(/^default-src 'self'; connect-src 'self'/);
    // A revalidation with the ETag costs no body.
    const etag = (await fetch(`${svc.baseUrl}/ui/app.js`)).headers.get("etag")!;
    expect((await fetch(`${svc.baseUrl}/ui/app.js`, { headers: { "if-none-match": etag } })).status).toBe(304);
  });

  it("answers 404 for any other path under /ui (no path traversal), 405 for other methods", async () => {
    for (const path of [
      "/ui/../package.json",
      "/ui/%2e%2e/package.json",
      "/ui/..%2fpackage.json",
      "/ui/x.js",
      "/ui/dist/app.js",
      "/ui/app.ts",
      "/ui//app.js",
      "/ui/app.js/",
      "/ui/constructor",
      "/ui/index.html/../../package.json",
    ]) {
      const res = await raw(path);
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toContain('"name"');
      expect(res.headers["content-security-policy"], path).toBe(DASHBOARD_CSP);
    }
    expect((await raw("/ui/app.js", "POST")).status).toBe(405);
    // The same over HTTP/2 (the listener's other server).
    const session = connect(svc.baseUrl);
    try {
      for (const [path, status] of [
        ["/ui/style.css", 200],
        ["/ui/../package.json", 404],
      ] as const) {
        const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
          const stream = session.request({ ":path": path });
          stream.on("response", (h) => {
            stream.resume();
            resolve(h);
          });
          stream.on("error", reject);
        });
        expect(headers[":status"], path).toBe(status);
        expect(headers["content-security-policy"], path).toBe(DASHBOARD_CSP);
      }
    } finally {
      session.close();
    }
    expect((await raw("/ui/app.js", "HEAD")).status).toBe(200);
    // Other paths still reach the JSON bridge.
    expect((await raw("/uix")).status).toBe(401);
    expect((await raw("/healthz")).status).toBe(200);
  });
});

describe("dashboard in Chromium", () => {
  it("asks for a token, then shows queues and workers with it (sent as a bearer token)", async () => {
    await page.goto(`${svc.baseUrl}/ui`);
    await page.locator("#error:has-text('unauthenticated')").waitFor();
    await page.fill("#token", TOKEN);
    await page.click("#token-form button[type=submit]");
    await page.locator('#queues tbody tr[data-handler="/demo_api/hello"]').waitFor();
    await page.locator("#workers tbody tr", { hasText: "/demo_api/hello" }).waitFor();
    await page.locator("#error").waitFor({ state: "hidden" });
    expect(await page.evaluate(() => sessionStorage.getItem("baichuan.token"))).toBe(TOKEN);
    const rpc = requests.filter((r) => r.url.includes("/baichuan.v1.AdminService/ListQueues"));
    expect(rpc[0]?.authorization).toBeUndefined();
    expect(rpc.at(-1)?.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("creates a task from the form and follows it live to FINISHED with its result", async () => {
    const id = await createFromForm("/demo_api/hello", '{"name": "dashboard"}');
    await page.locator('#task[data-status="FINISHED"][data-state="ended"]').waitFor();
    expect(await field("result").textContent()).toContain('"message": "hello, dashboard"');
    expect(await field("attempts").textContent()).toBe("1 / 1");
    expect((await history()).at(-1)).toBe("FINISHED");
    expect((await svc.bc.getTask(id)).status).toBe("finished");
  });

  it("shows a failed task as FAILED; Retry queues it again and it ends again after attempt 2", async () => {
    const id = await createFromForm("/demo_api/fail", '{"message": "boom"}');
    await page.locator('#task[data-status="FAILED"][data-state="ended"]').waitFor();
    expect(await field("error").textContent()).toContain("boom");
    expect(await field("attempts").textContent()).toBe("1 / 1");
    await page.click('#task button[data-action="retry"]');
    await page.waitForFunction(() => {
      const attempts = document.querySelector('#task [data-field="attempts"]')?.textContent;
      const panel = document.querySelector("#task");
      return panel?.dataset.status === "FAILED" && panel.dataset.state === "ended" && attempts === "2 / 2";
    });
    const seen = await history();
    const afterRetry = seen.slice(seen.indexOf("retry") + 1);
    expect(seen.indexOf("retry")).toBeGreaterThan(0);
    expect(afterRetry[0]).toMatch(/^(QUEUED|STARTED)$/);
    expect(afterRetry.at(-1)).toBe("FAILED");
    const task = await svc.bc.getTask(id);
    expect([task.status, task.attempts]).toEqual(["failed", 2]);
  });

  it("charts each handler's last hour: bars match the finished and failed counts, run time lines, axes", async () => {
    // /demo_api/hello finished and /demo_api/fail failed twice above; a few timed runs more.
    const more = await svc.bc.enqueueMany(
      Array.from({ length: 3 }, () => ({ handler: "/demo_api/sleep", params: { seconds: 0.05 } })),
    );
    await eventually(async () => {
      const tasks = await Promise.all(more.map((r) => svc.bc.getTask((r as { id: string }).id)));
      return tasks.every((t) => t.status === "finished");
    });
    const series = (handler: string) => storeOf(svc.bc).queries.series(handler, 60);
    const drawn = (handler: string, name: string) =>
      page
        .locator(`#series-charts .series-card[data-handler="${handler}"] [data-series="${name}"]`)
        .evaluateAll((nodes) => nodes.map((n) => [n.getAttribute("data-minute"), Number(n.getAttribute("data-value"))] as const));
    for (const handler of ["/demo_api/hello", "/demo_api/fail", "/demo_api/sleep"]) {
      const points = await series(handler);
      const expected = (pick: (p: (typeof points)[number]) => number) =>
        points.filter((p) => pick(p) > 0).map((p) => [new Date(p.minuteMs).toISOString(), pick(p)] as const);
      // The charts follow the queue table's totals: they catch up within a poll or two.
      await expect.poll(() => drawn(handler, "finished"), { timeout: 20_000 }).toEqual(expected((p) => p.finished));
      expect(await drawn(handler, "failed")).toEqual(expected((p) => p.failed));
      // One dot per minute with runs, per percentile, at the value the API gives.
      const timed = points.filter((p) => p.p50 !== undefined);
      // (A Duration on the wire keeps nanoseconds: compare to the microsecond.)
      const micros = (v: number | undefined) => Math.round((v ?? Number.NaN) * 1e6);
      expect((await drawn(handler, "p50")).map(([m, v]) => [m, micros(v)])).toEqual(
        timed.map((p) => [new Date(p.minuteMs).toISOString(), micros(p.p50)]),
      );
      expect((await drawn(handler, "p99")).length).toBe(timed.length);
    }
    expect((await series("/demo_api/fail")).reduce((n, p) => n + p.failed, 0)).toBeGreaterThanOrEqual(2);
    const card = page.locator('#series-charts .series-card[data-handler="/demo_api/sleep"]');
    // Two charts with their titles, y labels (0 .. a round top), five time labels and a legend.
    expect(await card.locator("svg.chart").count()).toBe(2);
    expect(await card.locator("svg.bars title").first().textContent()).toMatch(/runs ended per minute/);
    expect(await card.locator("svg.bars .label").allTextContents()).toEqual(expect.arrayContaining(["0"]));
    expect((await card.locator("svg.lines .label").allTextContents()).filter((t) => /^\d\d:\d\d$/.test(t))).toHaveLength(5);
    expect(await card.locator("svg.lines .legend").allTextContents()).toEqual(["p99", "p95", "p50"]);
    expect(await card.locator("svg.lines .label").allTextContents()).toEqual(
      expect.arrayContaining([expect.stringMatching(/ ms$/)]),
    );
    expect(await card.locator("h3").textContent()).toContain("3 finished, 0 failed");

    // The queue row shows the handler's limits and flow state, with its Pause button.
    const row = page.locator('#queues tr[data-handler="/demo_api/sleep"]');
    expect(await row.locator('[data-field="limits"]').textContent()).toBe("none");
    expect(await row.locator('[data-field="paused"]').textContent()).toBe("running");
    expect(await row.locator('[data-field="held"]').textContent()).toBe("0 held");
    expect(await row.locator('button[data-flow="pause"]').textContent()).toBe("Pause");
  });

  it("shows a queue's limits, and pauses and resumes it from its row (ListQueues agrees)", async () => {
    const SLEEP = "/demo_api/sleep";
    const adminRpc = createClient(AdminService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));
    const auth = { headers: { authorization: `Bearer ${TOKEN}` } };
    const listed = async () => (await adminRpc.listQueues({}, auth)).queues.find((q) => q.handler === SLEEP)!;
    const row = page.locator(`#queues tr[data-handler="${SLEEP}"]`);
    await adminRpc.setQueueLimits(
      { handler: SLEEP, limits: { ratePerSecond: 5, burst: 10, maxRunning: 4, maxRunningPerKey: 2 } },
      auth,
    );
    await row.locator('[data-field="limits"]', { hasText: "5/s (burst 10), 4 running, 2 per key" }).waitFor();

    await row.locator('button[data-flow="pause"]').click();
    await row.locator('[data-field="paused"]', { hasText: "paused" }).waitFor();
    expect((await listed()).paused).toBe(true);
    // A task created now waits, held back by the pause.
    const { id } = await svc.bc.enqueue(SLEEP, { seconds: 0.01 });
    await row.locator('[data-field="held"]:visible', { hasText: "1 held" }).waitFor();
    expect((await svc.bc.getTask(id)).status).toBe("queued");

    await row.locator('button[data-flow="resume"]').click();
    await row.locator('[data-field="paused"]', { hasText: "running" }).waitFor();
    expect((await listed()).paused).toBe(false);
    await eventually(async () => (await svc.bc.getTask(id)).status === "finished");
    // A slow rate reads as itself, not as 0/s.
    await adminRpc.setQueueLimits({ handler: SLEEP, limits: { ratePerSecond: 0.0001 } }, auth);
    await row.locator('[data-field="limits"]', { hasText: "0.0001/s" }).waitFor();
    await adminRpc.setQueueLimits({ handler: SLEEP, limits: {} }, auth);
    await row.locator('[data-field="limits"]', { hasText: "none" }).waitFor();
  });

  it("pages through queued tasks, shows progress, cancels a queued and a running task, deletes one", async () => {
    const running = await createFromForm(HOLD, "{}");
    await page.locator('#task[data-status="STARTED"]').waitFor();
    await field("progress").filter({ hasText: "40% waiting for the gate" }).waitFor();
    const queued = await createFromForm(HOLD, '{"n": 0}');
    await page.locator('#task[data-status="QUEUED"][data-state="live"]').waitFor();
    const more = await svc.bc.enqueueMany(Array.from({ length: 10 }, (_, n) => ({ handler: HOLD, params: { n: n + 1 } })));
    expect(more.every((r) => !(r instanceof Error))).toBe(true);

    // The queues table links to the listing; 11 queued tasks are two pages of 10.
    await page.selectOption("#list-size", "10");
    await page.locator(`#queues tr[data-handler="${HOLD}"] button[data-status="QUEUED"]`, { hasText: "11" }).first().click();
    await page.locator(`#tasks[data-loaded="${HOLD} QUEUED 0"]`).waitFor();
    expect(await page.locator("#tasks tbody tr").count()).toBe(10);
    expect(await page.locator(`#tasks tbody tr[data-task="${queued}"]`).count()).toBe(1);
    await page.click("#page-next");
    await page.locator(`#tasks[data-loaded="${HOLD} QUEUED 1"]`).waitFor();
    expect(await page.locator("#tasks tbody tr").count()).toBe(1);
    expect(await page.isDisabled("#page-next")).toBe(true);
    await page.click("#page-prev");
    await page.locator(`#tasks[data-loaded="${HOLD} QUEUED 0"]`).waitFor();

    // Cancel the queued one from its panel (opened from the list), then the running one.
    await page.click(`#tasks tbody tr[data-task="${queued}"] a`);
    await page.locator(`#task h2 code:text-is("${queued}")`).waitFor();
    await page.click('#task button[data-action="cancel"]');
    await page.locator('#task[data-status="CANCELED"][data-state="ended"]').waitFor();
    await openTask(running);
    await page.locator('#task[data-status="STARTED"]').waitFor();
    await page.click('#task button[data-action="cancel"]');
    await page.locator('#task[data-status="CANCELED"][data-state="ended"]').waitFor();
    expect(await history()).toContain("cancel");
    expect((await svc.bc.getTask(running)).status).toBe("canceled");
    expect((await svc.bc.getTask(queued)).status).toBe("canceled");

    // Delete takes two clicks.
    await page.click('#task button[data-action="delete"]');
    await page.locator('#task button[data-action="delete"]', { hasText: "Really delete?" }).waitFor();
    await page.click('#task button[data-action="delete"]');
    await page.locator('#task[data-status="DELETED"]').waitFor();
    await eventually(async () =>
      svc.bc.getTask(running).then(
        () => undefined,
        () => true,
      ),
    );
    // A task that does not exist (or expired) says so.
    await openTask(`${running.slice(0, 4)}0000000000000000`);
    await page.locator('#task[data-status="NOT_FOUND"][data-state="gone"]').waitFor();
  });

  it("lists schedules with their next run and last task; pauses, resumes and deletes one (delete takes two clicks)", async () => {
    await svc.bc.schedules.create({ id: "dash-ping", handler: "/demo_api/ping", every: 1 });
    await svc.bc.schedules.create({ id: "dash-nightly", handler: "/demo_api/hello", cron: "30 2 * * *", timeZone: "Asia/Tokyo" });
    const ping = page.locator('#schedules tr[data-schedule="dash-ping"]');
    // Its last task (queued: the one worker slot is held), linked to the task panel.
    await ping.locator(".badge.queued").waitFor();
    expect(await ping.locator("td").nth(5).locator("a").getAttribute("href")).toMatch(/^#\/task\/[0-9A-F]{20}$/);
    const nightly = page.locator('#schedules tr[data-schedule="dash-nightly"]');
    expect(await nightly.locator("td").nth(2).textContent()).toBe("cron 30 2 * * * (Asia/Tokyo)");
    expect(await nightly.locator("td").nth(3).textContent()).toMatch(/\(in \d+ (s|min)\)$/);

    await ping.locator('button[data-action="pause"]').click();
    await page.locator('#schedules tr[data-schedule="dash-ping"][data-state="paused"]').waitFor();
    expect((await svc.bc.schedules.get("dash-ping")).paused).toBe(true);
    await ping.locator('button[data-action="resume"]').click();
    await page.locator('#schedules tr[data-schedule="dash-ping"][data-state="active"]').waitFor();
    expect((await svc.bc.schedules.get("dash-ping")).paused).toBe(false);

    await ping.locator('button[data-action="delete"]').click();
    await ping.locator('button[data-action="delete"]', { hasText: "Really delete?" }).waitFor();
    expect((await svc.bc.schedules.list()).map((s) => s.id)).toContain("dash-ping");
    await ping.locator('button[data-action="delete"]').click();
    await ping.waitFor({ state: "detached" });
    expect((await svc.bc.schedules.list()).map((s) => s.id)).toEqual(["dash-nightly"]);
    await svc.bc.schedules.delete("dash-nightly");
  });

  it("talks only to its own origin, breaks no CSP rule, and is pictured in docs/dashboard.png", async () => {
    // The next held task is running now: show it, and the queue listing, in the picture.
    const next = await eventually(async () => {
      const page = await storeOf(svc.bc).queries.taskIds(HOLD, "running", 0, 1);
      return page[0];
    });
    await openTask(next);
    await field("progress").waitFor();
    // A second process on the same Redis runs a stream of pings: the page computes a throughput.
    const other = await startService({ redis: svc.redis, authTokens: [TOKEN] });
    let pinging = true;
    const pings = (async () => {
      while (pinging) {
        await other.bc.enqueueMany(Array.from({ length: 20 }, () => ({ handler: "/demo_api/ping" })));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    try {
      await page.locator("#workers tbody tr").nth(1).waitFor();
      await page.waitForFunction(() => Number.parseFloat(document.querySelector("#rate")?.textContent ?? "") > 0, null, {
        timeout: 10_000,
      });
      const file =
        process.env.UPDATE_SCREENSHOT === "1"
          ? join(import.meta.dirname, "..", "docs", "dashboard.png")
          : join(mkdtempSync(join(tmpdir(), "baichuan-dashboard-")), "dashboard.png");
      await page.screenshot({ path: file, fullPage: true });
      expect(statSync(file).size).toBeGreaterThan(10_000);
      if (process.env.UPDATE_SCREENSHOT !== "1") rmSync(dirname(file), { recursive: true });
    } finally {
      pinging = false;
      await pings;
      await other.close();
    }

    const origin = new URL(svc.baseUrl).origin;
    expect(requests.length).toBeGreaterThan(10);
    expect(requests.filter((r) => new URL(r.url).origin !== origin).map((r) => r.url)).toEqual([]);
    expect(problems).toEqual([]);
    await expect(panel().getAttribute("data-state")).resolves.toBe("live");
  });
});
