/**
 * Observability end to end, on the real roles: traces exported to a real Zipkin (started by
 * ops/zipkin-up.sh, installed by ops/install.sh) and read back through its API; metrics scraped
 * from each role's /metrics after a small run, moved by exactly what the run did; and every
 * metric the alerts and dashboards name present in those real scrapes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { scrape, slice, total, waitFor, type RoleProc, type Slice } from "./support/procs.ts";
import { QUICK_RETRY_ENV, uniqueName } from "./support/env.ts";

const ROOT = join(import.meta.dir, "..");
const ZIPKIN = `http://127.0.0.1:${process.env.ZIPKIN_PORT ?? 9411}`;
const SERVICE = uniqueName("fs");

let s: Slice;
let api: RoleProc;
let scheduler: RoleProc;
let executor: RoleProc;
let target: ReturnType<typeof Bun.serve>;
let token = "";
/** The target's received calls by path: their traceparent headers. */
const calls = new Map<string, string[]>();

beforeAll(async () => {
  const up = Bun.spawnSync(["bash", join(ROOT, "ops/zipkin-up.sh")], { stdout: "pipe", stderr: "pipe" });
  if (up.exitCode !== 0) throw new Error(`ops/zipkin-up.sh failed: ${up.stderr.toString()}`);
  target = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const path = new URL(req.url).pathname;
      const list = calls.get(path) ?? [];
      list.push(req.headers.get("traceparent") ?? "");
      calls.set(path, list);
      if (path === "/flaky") return new Response("", { status: list.length === 1 ? 503 : 200 });
      if (path === "/bad400") return new Response("", { status: 400 });
      return new Response("ok");
    },
  });
  s = await slice({
    env: {
      ...QUICK_RETRY_ENV,
      LOG_LEVEL: "warn",
      OTEL_TRACES_EXPORTER: "zipkin",
      OTEL_EXPORTER_ZIPKIN_ENDPOINT: `${ZIPKIN}/api/v2/spans`,
      OTEL_SERVICE_NAME: SERVICE,
    },
  });
  api = await s.start("api");
  scheduler = await s.start("scheduler");
  executor = await s.start("executor");
  await post("/api/v1/users", { username: "observed", password: "password123" });
  token = (await post("/api/v1/auth/login", { username: "observed", password: "password123" })).data.token;
}, 180_000);

afterAll(async () => {
  await s?.close();
  target?.stop(true);
});

function post(path: string, body: unknown): Promise<any> {
  return fetch(api.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  }).then((r) => r.json());
}
const job = (id: string) => fetch(`${api.url}/api/v1/me/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as Promise<any>).then((r) => r.data);
const finished = (id: string) => waitFor(`job ${id} to finish`, async () => ((await job(id)).finished_at ? job(id) : null), 60_000);

interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name: string;
  kind?: "CLIENT" | "SERVER" | "PRODUCER" | "CONSUMER";
  localEndpoint?: { serviceName?: string };
  tags?: Record<string, string>;
}

describe("tracing", () => {
  test("one job is one trace in Zipkin: API, dispatch, each run and its HTTP call, linked parent to child; the target gets the trace's traceparent", async () => {
    const created = await post("/api/v1/me/jobs", {
      message: "traced",
      execute_at: new Date(Date.now() + 1_000).toISOString(),
      max_attempts: 3,
      target: { url: `http://127.0.0.1:${target.port}/flaky`, method: "POST" },
    });
    const traceId: string = created.data.trace_id;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    const done = await finished(created.data.id);
    expect([done.status, done.attempt, done.trace_id]).toEqual(["succeeded", 2, traceId]);

    // Spans leave each process in batches about a second apart.
    const spans = await waitFor("the trace's spans in Zipkin", async () => {
      const r = await fetch(`${ZIPKIN}/api/v2/trace/${traceId}`);
      if (!r.ok) return null;
      const all = (await r.json()) as ZipkinSpan[];
      const processes = all.filter((sp) => sp.kind === "CONSUMER");
      const recorded = all.filter((sp) => sp.name === "update jobs" && sp.localEndpoint?.serviceName === `${SERVICE}-executor`);
      return processes.length >= 2 && recorded.length >= 4 ? all : null;
    }, 30_000, 500);

    const byId = new Map(spans.map((sp) => [sp.id, sp]));
    expect(new Set(spans.map((sp) => sp.traceId))).toEqual(new Set([traceId]));
    expect(new Set(spans.map((sp) => sp.localEndpoint?.serviceName))).toEqual(new Set(["api", "scheduler", "executor"].map((r) => `${SERVICE}-${r}`)));
    // One root, the API request; every other span's parent is in the trace.
    const roots = spans.filter((sp) => !sp.parentId);
    expect(roots.map((r) => [r.name, r.kind, r.localEndpoint?.serviceName])).toEqual([["post /api/v1/me/jobs", "SERVER", `${SERVICE}-api`]]);
    for (const sp of spans) if (sp.parentId) expect(byId.has(sp.parentId), `${sp.name}'s parent`).toBe(true);
    const parent = (sp: ZipkinSpan) => byId.get(sp.parentId!)!;

    // API: request -> job.create -> INSERT jobs.
    const create = spans.find((sp) => sp.name === "job.create")!;
    expect(parent(create)).toBe(roots[0]!);
    expect(spans.some((sp) => sp.name === "insert jobs" && sp.kind === "CLIENT" && sp.parentId === create.id && sp.tags?.["db.system.name"] === "postgresql")).toBe(true);

    // Each attempt: job.dispatch (child of job.create) -> mark + send; the run's consumer span is the send's child.
    const runs = spans.filter((sp) => sp.kind === "CONSUMER").sort((a, b) => Number(a.tags!["job.attempt"]) - Number(b.tags!["job.attempt"]));
    expect(runs.map((r) => r.tags!["job.attempt"])).toEqual(["1", "2"]);
    for (const run of runs) {
      const send = parent(run);
      expect([send.kind, send.localEndpoint?.serviceName, send.tags?.["messaging.destination.name"]]).toEqual(["PRODUCER", `${SERVICE}-scheduler`, s.topicDue]);
      const dispatch = parent(send);
      expect([dispatch.name, dispatch.tags?.["job.attempt"], dispatch.parentId]).toEqual(["job.dispatch", run.tags!["job.attempt"], create.id]);
      expect(spans.some((sp) => sp.name === "update jobs" && sp.parentId === dispatch.id)).toBe(true); // the mark
      // In the run: the claim, the handler with its HTTP client span, and the outcome.
      const children = spans.filter((sp) => sp.parentId === run.id);
      expect(children.map((c) => c.name).sort()).toEqual(["job.handle http", "update jobs", "update jobs"]);
      const handler = children.find((c) => c.name === "job.handle http")!;
      const call = spans.find((sp) => sp.parentId === handler.id)!;
      expect([call.kind, call.name, call.tags?.["http.request.method"], call.tags?.["http.response.status_code"]]).toEqual([
        "CLIENT", "post", "POST", run.tags!["job.attempt"] === "1" ? "503" : "200",
      ]);
      // What the target received names this trace and this client span as its parent.
      expect(calls.get("/flaky")![Number(run.tags!["job.attempt"]) - 1]).toBe(`00-${traceId}-${call.id}-01`);
    }
  }, 90_000);

  test("a job created under an unsampled trace (traceparent flags 00) keeps its trace id and makes no spans anywhere; the target still gets that trace", async () => {
    const traceId = "5a3f".padEnd(32, "7");
    const r = await fetch(api.url + "/api/v1/me/jobs", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}`, traceparent: `00-${traceId}-${"1".repeat(16)}-00` },
      body: JSON.stringify({ message: "unsampled", execute_at: new Date(Date.now() + 500).toISOString(), target: { url: `http://127.0.0.1:${target.port}/unsampled`, method: "POST" } }),
    }).then((x) => x.json() as Promise<any>);
    expect(r.data.trace_id).toBe(traceId);
    expect((await finished(r.data.id)).status).toBe("succeeded");
    expect(calls.get("/unsampled")![0]!.split("-").slice(1, 2)).toEqual([traceId]);
    // A sampled job after it, then its spans are in Zipkin: the exporters have flushed past the unsampled one.
    const after = await post("/api/v1/me/jobs", { message: "sampled", execute_at: new Date(Date.now() + 300).toISOString() });
    await finished(after.data.id);
    await waitFor("the sampled job's executor spans", async () => {
      const t = await fetch(`${ZIPKIN}/api/v2/trace/${after.data.trace_id}`);
      return t.ok && ((await t.json()) as ZipkinSpan[]).some((sp) => sp.kind === "CONSUMER") ? true : null;
    }, 30_000, 500);
    expect((await fetch(`${ZIPKIN}/api/v2/trace/${traceId}`)).status).toBe(404);
  }, 90_000);
});

describe("metrics", () => {
  test("a small run moves each role's counters and histograms by exactly what it did; scrapes and probes are not API traffic", async () => {
    const before = { api: await scrape(api), scheduler: await scrape(scheduler), executor: await scrape(executor) };
    const at = new Date(Date.now() + 500).toISOString();
    const batch = await post("/api/v1/me/jobs/batch", { jobs: Array.from({ length: 5 }, (_, i) => ({ message: `m${i}`, execute_at: at })) });
    const bad = await post("/api/v1/me/jobs", { message: "bad", execute_at: at, target: { url: `http://127.0.0.1:${target.port}/bad400`, method: "POST" } });
    const ids: string[] = [...batch.data.map((j: any) => j.id), bad.data.id];
    for (const id of ids) await finished(id);
    for (let i = 0; i < 3; i++) await Promise.all([fetch(`${api.url}/metrics`), fetch(`${api.url}/readyz`), fetch(`${api.url}/healthz`)]);

    const moved = async (role: RoleProc, was: Map<string, number>, name: string, labels: Record<string, string> = {}) => total((await scrape(role)).series, name, labels) - total(was, name, labels);
    // The executor counts an outcome just after recording it: wait until the last one is in.
    await waitFor("the executor's counters", async () => (await moved(executor, before.executor.series, "jobs_processed_total")) >= 6, 10_000);
    const expected: [RoleProc, Map<string, number>, string, Record<string, string>, number][] = [
      [api, before.api.series, "jobs_created_total", {}, 6],
      [api, before.api.series, "http_requests_total", { route: "/api/v1/me/jobs/batch", method: "POST", status: "201" }, 1],
      [api, before.api.series, "http_requests_total", { route: "/api/v1/me/jobs", method: "POST", status: "201" }, 1],
      [api, before.api.series, "http_request_duration_seconds_count", { route: "/api/v1/me/jobs/batch" }, 1],
      [api, before.api.series, "http_requests_total", { route: "/metrics" }, 0],
      [api, before.api.series, "http_requests_total", { route: "/readyz" }, 0],
      [scheduler, before.scheduler.series, "jobs_dispatched_total", {}, 6],
      [scheduler, before.scheduler.series, "job_dispatch_lateness_seconds_count", {}, 6],
      [executor, before.executor.series, "jobs_processed_total", { outcome: "succeeded" }, 5],
      [executor, before.executor.series, "jobs_processed_total", { outcome: "failed" }, 1],
      [executor, before.executor.series, "jobs_dead_lettered_total", { reason: "failed" }, 1],
      [executor, before.executor.series, "jobs_started_total", {}, 6],
      [executor, before.executor.series, "job_start_lateness_seconds_count", {}, 6],
      [executor, before.executor.series, "job_latency_seconds_count", {}, 6],
    ];
    const got = await Promise.all(expected.map(([role, was, name, labels]) => moved(role, was, name, labels)));
    expect(got).toEqual(expected.map((e) => e[4]));
    // The standard process metrics are there, counting.
    const after = await scrape(executor);
    expect(total(after.series, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(total(after.series, "process_resident_memory_bytes")).toBeGreaterThan(10_000_000);
    expect(after.types.has("nodejs_eventloop_lag_seconds")).toBe(true);
    // The scheduler reports its shards against the total, and nothing due is left.
    const sched = (await scrape(scheduler)).series;
    expect([total(sched, "scheduler_shards_owned"), total(sched, "scheduler_shards_total")]).toEqual([4, 4]);
    expect(total(sched, "scheduler_due_backlog_jobs")).toBe(0);
  }, 90_000);

  test("every metric the alerts and dashboards name is in a real scrape of the roles", async () => {
    const exported = new Set<string>();
    for (const role of [api, scheduler, executor]) for (const t of (await scrape(role)).types) exported.add(t);
    // Metric names in a PromQL expression: identifiers with an underscore that are not functions or labels.
    const FUNCTIONS = new Set(["histogram_quantile", "min_over_time", "max_over_time", "avg_over_time", "count_over_time", "label_replace"]);
    const namesIn = (expr: string) =>
      [...expr.replace(/\{[^}]*\}/g, "{}").replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "").replace(/\bgroup_(left|right)\b/g, "").matchAll(/\b([a-z][a-z0-9]*_[a-z0-9_]+)\b/g)]
        .map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ""))
        .filter((n) => !FUNCTIONS.has(n));
    const rules = parse(readFileSync(join(ROOT, "ops/prometheus/alerts.yml"), "utf8"));
    const dash = JSON.parse(readFileSync(join(ROOT, "ops/grafana/dashboards/fairshare.json"), "utf8"));
    const exprs: [string, string][] = [
      ...rules.groups.flatMap((g: any) => g.rules).map((a: any) => [a.alert, a.expr] as [string, string]),
      ...dash.panels.flatMap((p: any) => p.targets.map((t: any) => [p.title, t.expr] as [string, string])),
    ];
    expect(exprs.length).toBeGreaterThanOrEqual(20);
    for (const [where, expr] of exprs) {
      const names = namesIn(expr);
      // `up` is Prometheus's own; any other expression names a metric of ours.
      if (!/\bup\b/.test(expr)) expect(names.length, `${where}: ${expr}`).toBeGreaterThan(0);
      for (const n of names) expect(exported.has(n), `${where}: ${n}`).toBe(true);
    }
  }, 30_000);
});
