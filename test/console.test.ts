/**
 * The web console in a real headless Chromium against the real roles (api, scheduler,
 * executor) and services: what a user and an operator do, seen the way they see it. Every page
 * is checked with axe-core (no serious or critical violation) and saved as a screenshot.
 * The browser runs in a time zone other than UTC, so times are entered in the browser's zone.
 */
import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launchBrowser, screenshot, seriousViolations } from "./support/browser.ts";
import { QUICK_RETRY_ENV } from "./support/env.ts";
import { slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";

setDefaultTimeout(120_000);

const ADMIN_TOKEN = "console-test-admin-token-0123456789abcdef";
const JWT_SECRET = "console-test-jwt-secret-0123456789abcdef";
const ZONE = "America/New_York";
const TRACE_URL = "http://127.0.0.1:9411/zipkin/traces/{trace_id}";

let s: Slice;
let api: RoleProc;
let browser: Browser;
/** Calls the HTTP targets get: /ok answers 200 after a short wait, /flaky 500 until `healthy`. */
const calls: string[] = [];
let healthy = false;
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch: async (req) => {
    const path = new URL(req.url).pathname;
    calls.push(path);
    if (path === "/slow") return (await Bun.sleep(20), new Response("ok"));
    if (path === "/flaky") return new Response(healthy ? "ok" : "broken", { status: healthy ? 200 : 500 });
    return new Response("broken", { status: 500 });
  },
});
const targetUrl = (path: string) => `http://127.0.0.1:${target.port}${path}`;

beforeAll(async () => {
  // Few runs in flight and a slow target: a backlog lasts long enough to watch it drain.
  s = await slice({
    env: { ...QUICK_RETRY_ENV, ADMIN_TOKEN, JWT_SECRET, CONSOLE_TRACE_URL: TRACE_URL, SCHEDULER_WINDOW_MIN: "20", SCHEDULER_WINDOW_MAX: "60", EXECUTOR_CONCURRENCY: "8", LOG_LEVEL: "warn" },
  });
  api = await s.start("api");
  await s.start("scheduler");
  await s.start("executor");
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await s?.close();
  target.stop(true);
});

async function call(method: string, path: string, body?: unknown, token?: string): Promise<any> {
  const res = await fetch(api.url + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, ...((await res.json()) as object) };
}

async function apiUser(name: string, weight = 1): Promise<{ id: number; token: string }> {
  const created = await call("POST", "/api/v1/users", { username: name, password: "password123", job_weight: weight });
  expect(created.status).toBe(201);
  const login = await call("POST", "/api/v1/auth/login", { username: name, password: "password123" });
  return { id: created.data.id, token: login.data.token };
}

async function newPage(): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ timezoneId: ZONE, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  return { context, page, errors };
}

/** Accessibility check and screenshot of a page as it is now. */
async function check(page: Page, name: string): Promise<void> {
  await screenshot(page, name);
  expect({ page: name, violations: await seriousViolations(page) }).toEqual({ page: name, violations: [] });
}

/** The browser's local wall-clock time `ms` from now, as a datetime-local input takes it. */
function localInput(ms: number): { value: string; utc: string } {
  const at = new Date(Math.floor((Date.now() + ms) / 1000) * 1000);
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" })
      .formatToParts(at)
      .map((p) => [p.type, p.value]),
  );
  return { value: `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}`, utc: at.toISOString() };
}

async function signUp(page: Page, name: string): Promise<void> {
  await page.goto(`${api.url}/console/#/signup`);
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill("password123");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "My jobs" }).waitFor();
}

/** Schedules a job through the New job form; returns its id (from the job page it lands on). */
async function createJob(page: Page, opts: { message: string; inMs: number; target?: string; maxAttempts?: number; priority?: "high" | "normal" | "low" }): Promise<string> {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
  await page.getByLabel("Message").fill(opts.message);
  const at = localInput(opts.inMs);
  await page.getByLabel(/^Run at/).fill(at.value);
  // The time typed in the browser's zone is shown as the UTC instant it will be sent as.
  await page.getByText(`Sent as ${at.utc} (UTC)`).waitFor();
  if (opts.maxAttempts) await page.getByLabel(/^Attempts at most/).fill(String(opts.maxAttempts));
  // Normal unless told otherwise, as the API's default.
  expect(await page.getByLabel("Priority").inputValue()).toBe("normal");
  if (opts.priority) await page.getByLabel("Priority").selectOption(opts.priority);
  if (opts.target) {
    await page.getByLabel("Call an HTTP target").check();
    await page.getByLabel("URL").fill(opts.target);
  }
  await page.getByRole("button", { name: "Schedule job" }).click();
  const heading = page.getByRole("heading", { name: /^Job \d+$/ });
  await heading.waitFor();
  return (await heading.textContent())!.replace("Job ", "");
}

const userToken = (page: Page) => page.evaluate(() => sessionStorage.getItem("fairshare.token")!);

describe("the console, for a user", () => {
  test("sign up, schedule a job due in 2 s, watch it succeed without reloading, open it and see its attempt", async () => {
    const { context, page, errors } = await newPage();
    await page.goto(`${api.url}/console/`);
    // Not signed in: the jobs page sends you to sign in.
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await check(page, "sign-in");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Sign up" }).click();
    await page.getByRole("heading", { name: "Sign up" }).waitFor();
    await check(page, "sign-up");
    await signUp(page, "alice");
    await page.getByText(/whsec_[0-9a-f]{64}/).waitFor();

    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByRole("heading", { name: "New job" }).waitFor();
    await check(page, "new-job");
    const id = await createJob(page, { message: "hello from the console", inMs: 2_000, priority: "high" });
    const token = await userToken(page);
    const job = await call("GET", `/api/v1/me/jobs/${id}`, undefined, token);
    expect(job.data.message).toBe("hello from the console");
    expect(job.data.priority).toBe("high");
    expect(await page.locator("dt", { hasText: /^Priority$/ }).locator("xpath=following-sibling::dd[1]").textContent()).toBe("high");

    // The list, left open: the row turns succeeded by itself (the page is not reloaded).
    await page.getByRole("link", { name: "All jobs" }).click();
    const row = page.locator(`tr[data-job="${id}"]`);
    await row.waitFor();
    await page.evaluate(() => ((globalThis as unknown as { notReloaded: boolean }).notReloaded = true));
    await row.locator(".status.succeeded").waitFor({ timeout: 30_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    await check(page, "my-jobs");

    await row.getByRole("link", { name: id }).click();
    await page.getByRole("heading", { name: `Job ${id}` }).waitFor();
    const attempt = page.locator('tr[data-attempt="1"]');
    await attempt.waitFor();
    expect(await attempt.locator(".status").textContent()).toBe("succeeded");
    // The job's trace, linked in the configured trace UI.
    expect(job.data.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(await page.getByRole("link", { name: job.data.trace_id }).getAttribute("href")).toBe(TRACE_URL.replace("{trace_id}", job.data.trace_id));
    await check(page, "job");
    expect(errors).toEqual([]);
    await context.close();
  });

  test("cancel a pending job from its page", async () => {
    const { context, page } = await newPage();
    await signUp(page, "bob");
    const id = await createJob(page, { message: "not needed after all", inMs: 3_600_000 });
    await page.getByRole("button", { name: "Cancel job" }).click();
    await page.locator("dd .status.cancelled").waitFor();
    const job = await call("GET", `/api/v1/me/jobs/${id}`, undefined, await userToken(page));
    expect(job.data.status).toBe("cancelled");
    await context.close();
  });

  test("a reschedule moves a waiting job to the time typed in the browser's zone", async () => {
    const { context, page } = await newPage();
    await signUp(page, "rita");
    const id = await createJob(page, { message: "later", inMs: 3_600_000 });
    const at = localInput(7_200_000);
    await page.getByLabel(/^Run at/).fill(at.value);
    await page.getByRole("button", { name: "Reschedule" }).click();
    await waitFor("the new time", async () => (await call("GET", `/api/v1/me/jobs/${id}`, undefined, await userToken(page))).data.execute_at === at.utc, 10_000);
    await context.close();
  });

  test("a failing target's job reaches failed; retried from its page, it succeeds", async () => {
    const { context, page } = await newPage();
    await signUp(page, "carol");
    healthy = false;
    const id = await createJob(page, { message: "call me", inMs: 0, target: targetUrl("/flaky"), maxAttempts: 1 });
    await page.locator("dd .status.failed").waitFor({ timeout: 30_000 });
    const first = page.locator('tr[data-attempt="1"]');
    await first.waitFor();
    expect(await first.locator("td").nth(5).textContent()).toBe("500");
    await check(page, "job-failed");
    healthy = true;
    await page.getByRole("button", { name: "Retry job" }).click();
    await page.locator("dd .status.succeeded").waitFor({ timeout: 30_000 });
    await page.locator('tr[data-attempt="2"] .status.succeeded').waitFor();
    const job = await call("GET", `/api/v1/me/jobs/${id}`, undefined, await userToken(page));
    expect(job.data).toMatchObject({ status: "succeeded", attempt: 2 });
    await context.close();
  });

  test("bad input shows the API's own message next to the field", async () => {
    const { context, page } = await newPage();
    // Sign-up: the username's rule, as the API states it.
    await page.goto(`${api.url}/console/#/signup`);
    await page.getByLabel("Username").fill("no spaces allowed");
    await page.getByLabel("Password").fill("password123");
    await page.getByRole("button", { name: "Create account" }).click();
    const refused = await call("POST", "/api/v1/users", { username: "no spaces allowed", password: "password123" });
    const usernameProblem = refused.error.details.find((d: { path: string }) => d.path === "/username").message;
    const username = page.getByLabel("Username");
    await page.locator("#f-username-error").getByText(usernameProblem, { exact: true }).waitFor();
    expect(await username.getAttribute("aria-invalid")).toBe("true");

    // A job too far ahead: only the API knows the horizon.
    await signUp(page, "dave");
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "New job" }).click();
    await page.getByLabel("Message").fill("next year, and the one after");
    await page.getByLabel(/^Run at/).fill(localInput(2 * 365 * 86_400_000).value);
    await page.getByRole("button", { name: "Schedule job" }).click();
    const tooFar = await call("POST", "/api/v1/me/jobs", { message: "x", execute_at: localInput(2 * 365 * 86_400_000).utc }, await userToken(page));
    expect(tooFar.status).toBe(400);
    const atProblem = tooFar.error.details.find((d: { path: string }) => d.path === "/execute_at").message;
    await page.locator("#f-execute-at-error").getByText(atProblem, { exact: true }).waitFor();
    expect(await page.getByLabel(/^Run at/).getAttribute("aria-invalid")).toBe("true");
    await check(page, "new-job-error");
    // Nothing was created by the refused request.
    expect((await call("GET", "/api/v1/me/jobs", undefined, await userToken(page))).data).toEqual([]);
    await context.close();
  });

  test("an expired token, or one the API refuses, sends you back to sign in with a message", async () => {
    const eve = await apiUser("eve");
    const { context, page } = await newPage();
    // A token whose expiry has passed (signed with the cluster's secret: only its time is wrong).
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: String(eve.id), username: "eve", iat: now - 3_700, exp: now - 100 })}`;
    const expired = `${unsigned}.${createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url")}`;
    expect((await call("GET", "/api/v1/me/jobs", undefined, expired)).status).toBe(401);
    await page.goto(`${api.url}/console/`);
    await page.evaluate((t) => sessionStorage.setItem("fairshare.token", t), expired);
    await page.goto(`${api.url}/console/#/jobs`);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByText("Your session has expired. Sign in again.").waitFor();

    // A valid token that the API stops accepting while the page is open (the user is disabled).
    await page.evaluate((t) => sessionStorage.setItem("fairshare.token", t), eve.token);
    await page.goto(`${api.url}/console/#/jobs`);
    await page.getByRole("heading", { name: "My jobs" }).waitFor();
    expect((await call("PATCH", `/api/v1/admin/users/${eve.id}`, { disabled: true }, ADMIN_TOKEN)).status).toBe(200);
    await page.getByRole("heading", { name: "Sign in" }).waitFor({ timeout: 15_000 });
    await page.getByText("Your session has expired or was ended. Sign in again.").waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem("fairshare.token"))).toBeNull();
    await context.close();
  });

  test("10,000 jobs over a slow network: one page of 50 at a time, refreshes never pile up", async () => {
    const many = await apiUser("many");
    for (let i = 0; i < 10; i++) {
      const jobs = Array.from({ length: 1_000 }, (_, k) => ({ message: `job ${i * 1_000 + k}`, execute_at: new Date(Date.now() + 86_400_000).toISOString() }));
      expect((await call("POST", "/api/v1/me/jobs/batch", { jobs }, many.token)).status).toBe(201);
    }
    const { context, page, errors } = await newPage();
    await page.goto(`${api.url}/console/`);
    await page.evaluate((t) => sessionStorage.setItem("fairshare.token", t), many.token);
    // 600 ms each way and 64 kB/s.
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 600, downloadThroughput: 64 * 1024, uploadThroughput: 64 * 1024 });
    let inFlight = 0;
    let most = 0;
    const isApi = (url: string) => url.includes("/api/v1/me/jobs");
    page.on("request", (r) => isApi(r.url()) && (most = Math.max(most, ++inFlight)));
    const done = (r: { url(): string }) => isApi(r.url()) && inFlight--;
    page.on("requestfinished", done);
    page.on("requestfailed", done);
    await page.goto(`${api.url}/console/#/jobs`);
    await page.getByText("(10,000)").waitFor({ timeout: 30_000 });
    expect(await page.locator("tr[data-job]").count()).toBe(50);
    const firstPage = await page.locator("tr[data-job]").first().getAttribute("data-job");
    await page.getByRole("button", { name: "Older" }).click();
    await waitFor("the second page", async () => (await page.locator("tr[data-job]").first().getAttribute("data-job")) !== firstPage, 30_000, 200);
    expect(await page.locator("tr[data-job]").count()).toBe(50);
    await page.getByRole("button", { name: "Newer" }).click();
    await waitFor("the first page again", async () => (await page.locator("tr[data-job]").first().getAttribute("data-job")) === firstPage, 30_000, 200);
    // Let refreshes run on the slow link: each waits for the last (a list and a count at a time).
    // (Counted once the pages left behind have had their last answers.)
    await Bun.sleep(3_000);
    most = inFlight;
    await Bun.sleep(6_000);
    expect(most).toBeLessThanOrEqual(2);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("the console, for an operator", () => {
  test("shares of starts move toward 1:3 while a backlog drains; weights, running caps, pause, dead letters and shards", async () => {
    const light = await apiUser("light", 1);
    const heavy = await apiUser("heavy", 3);
    // A dead letter to retry from the page.
    const doomed = await call("POST", "/api/v1/me/jobs", { message: "always fails", execute_at: new Date().toISOString(), max_attempts: 1, target: { url: targetUrl("/fail") } }, light.token);
    await waitFor("the dead letter", async () => (await call("GET", `/api/v1/me/jobs/${doomed.data.id}`, undefined, light.token)).data.status === "failed", 30_000, 200);

    const { context, page, errors } = await newPage();
    await page.goto(`${api.url}/console/#/operator`);
    await page.getByLabel("Admin token").fill("not-the-token-but-long-enough-0123456789");
    await page.getByRole("button", { name: "Open the operator view" }).click();
    await page.getByText("The admin token was refused. Enter it again.").waitFor();
    await check(page, "operator-sign-in");
    await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Open the operator view" }).click();
    await page.getByRole("heading", { name: "Fair share" }).waitFor();

    // Shards: every one owned by the one scheduler.
    const shardCount = Number(s.env.SHARD_COUNT);
    await page.locator("#shards tbody tr").nth(shardCount - 1).waitFor();
    const owners = await page.locator("#shards tbody tr td:nth-child(3)").allTextContents();
    expect(owners.length).toBe(shardCount);
    const member = (await call("GET", "/api/v1/admin/shards", undefined, ADMIN_TOKEN)).data.members[0];
    expect(owners.every((o) => o === member)).toBe(true);

    // The dead letter, retried from the page: it runs again (and fails again: its target still does).
    const dead = page.locator(`#dead-letters tr[data-job="${doomed.data.id}"]`);
    await dead.waitFor({ timeout: 15_000 });
    await dead.getByRole("button", { name: `Retry job ${doomed.data.id}` }).click();
    await waitFor("the retried run", async () => (await call("GET", `/api/v1/me/jobs/${doomed.data.id}`, undefined, light.token)).data.attempt === 2, 30_000, 200);

    // A backlog: 3,000 jobs each, due now, against ~8 runs in flight of 20 ms each.
    for (let i = 0; i < 3; i++) {
      for (const u of [light, heavy]) {
        const jobs = Array.from({ length: 1_000 }, (_, k) => ({ message: `b${i}-${k}`, execute_at: new Date().toISOString(), target: { url: targetUrl("/slow") } }));
        expect((await call("POST", "/api/v1/me/jobs/batch", { jobs }, u.token)).status).toBe(201);
      }
    }
    // Read the page's table as it refreshes, while both users still wait.
    const samples: { heavy: number; light: number; owedHeavy: number; occupancyHeavy: number }[] = [];
    await waitFor(
      "shares near 1:3 while both users wait",
      async () => {
        const read = async (id: number) => {
          const row = page.locator(`#shares tr[data-user="${id}"]`);
          if (!(await row.count())) return null;
          const cells = await row.locator("td").allTextContents();
          return { waiting: Number(cells[2]!.replace(/,/g, "")), recent: Number(await row.locator("td[data-recent]").getAttribute("data-recent")), owed: Number(await row.locator("td[data-owed]").getAttribute("data-owed")), occupancy: Number(await row.locator("td[data-occupancy]").getAttribute("data-occupancy")) };
        };
        const [l, h] = [await read(light.id), await read(heavy.id)];
        if (!l || !h || l.waiting === 0 || h.waiting === 0 || !(l.recent + h.recent > 0)) return false;
        samples.push({ heavy: h.recent, light: l.recent, owedHeavy: h.owed, occupancyHeavy: h.occupancy });
        return samples.filter((x) => x.heavy > 0.65 && x.heavy < 0.85).length >= 3;
      },
      60_000,
      2_000, // the page's refresh period: each sample is a new answer
    );
    console.log(`operator view, heavy user's share of starts in the last 5 intervals, sampled while both waited: ${samples.map((x) => x.heavy.toFixed(3)).join(" ")}`);
    console.log(`operator view, heavy user's share of executor time in the same samples: ${samples.map((x) => x.occupancyHeavy.toFixed(3)).join(" ")}`);
    await check(page, "operator");
    // Executor time beside the starts: both users' jobs take the same time (/slow), so the shares
    // of executor time are near the shares of starts.
    await page.getByRole("columnheader", { name: "Executor time, last 5 intervals" }).waitFor();
    expect(samples.filter((x) => x.occupancyHeavy > 0.6 && x.occupancyHeavy < 0.9).length).toBeGreaterThanOrEqual(1);
    // What the weights owe, as the page states it, is 3/4 to the heavier user.
    expect(samples.at(-1)!.owedHeavy).toBeCloseTo(0.75, 5);
    // The backlog drains, and the page says so.
    await page.locator("#backlog-now").getByText(/^0 jobs due and waiting/).waitFor({ timeout: 60_000 });
    expect(await page.locator(".chart canvas").count()).toBeGreaterThanOrEqual(3);

    // A weight changed on the page is the user's weight.
    const weight = page.locator(`#users tr[data-user="${light.id}"]`);
    await weight.getByLabel("Weight of light", { exact: true }).fill("2.5");
    await weight.getByRole("button", { name: "Save" }).click();
    await page.getByText("light's weight is now 2.5").waitFor();
    expect((await call("GET", `/api/v1/admin/users/${light.id}`, undefined, ADMIN_TOKEN)).data.job_weight).toBe(2.5);
    // A weight out of range: the API's message, next to the field.
    await weight.getByLabel("Weight of light", { exact: true }).fill("0");
    await weight.getByRole("button", { name: "Save" }).click();
    const refused = await call("PATCH", `/api/v1/admin/users/${light.id}`, { job_weight: 0 }, ADMIN_TOKEN);
    expect(refused.status).toBe(400);
    await weight.locator(".field-error").getByText(refused.error.details[0].message, { exact: true }).waitFor();

    // A running cap set on the page is the user's max_running; out of range, the API's message
    // is next to the field; emptied, it is the default (null) again.
    const cap = weight.getByLabel("Max running of light", { exact: true });
    expect(await cap.inputValue()).toBe("");
    await cap.fill("5");
    await weight.getByRole("button", { name: "Set" }).click();
    await page.getByText("light's max running is now 5.").waitFor();
    expect((await call("GET", `/api/v1/admin/users/${light.id}`, undefined, ADMIN_TOKEN)).data.max_running).toBe(5);
    await cap.fill("0");
    await weight.getByRole("button", { name: "Set" }).click();
    const refusedCap = await call("PATCH", `/api/v1/admin/users/${light.id}`, { max_running: 0 }, ADMIN_TOKEN);
    expect(refusedCap.status).toBe(400);
    await weight.locator(`#max-running-${light.id}-error`).getByText(refusedCap.error.details[0].message, { exact: true }).waitFor();
    expect(await cap.getAttribute("aria-invalid")).toBe("true");
    await cap.fill("");
    await weight.getByRole("button", { name: "Set" }).click();
    await page.getByText("light's max running is now the default.").waitFor();
    expect((await call("GET", `/api/v1/admin/users/${light.id}`, undefined, ADMIN_TOKEN)).data.max_running).toBeNull();

    // Pause and resume from the page: the row says so, and so does the API.
    await weight.getByRole("button", { name: "Pause light" }).click();
    await page.locator(`#users tr[data-user="${light.id}"][data-paused="true"]`).waitFor();
    expect(await weight.locator("td.paused").textContent()).toContain("paused");
    expect((await call("GET", `/api/v1/admin/users/${light.id}`, undefined, ADMIN_TOKEN)).data.paused).toBe(true);
    await check(page, "operator-user-paused");
    await weight.getByRole("button", { name: "Resume light" }).click();
    await page.locator(`#users tr[data-user="${light.id}"][data-paused="false"]`).waitFor();
    expect((await call("GET", `/api/v1/admin/users/${light.id}`, undefined, ADMIN_TOKEN)).data.paused).toBe(false);
    expect(errors).toEqual([]);
    await context.close();
  });
});
