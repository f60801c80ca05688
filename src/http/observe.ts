/**
 * Per-request observability: a server span (continuing a caller's `traceparent` if sent),
 * request count and latency by route template and status (the seed's API dashboards and the
 * 5xx alert). Health probes and metric scrapes are left out of both.
 */
import { context, SpanKind, SpanStatusCode, trace, type Span } from "@opentelemetry/api";
import { Elysia } from "elysia";
import { metrics } from "../metrics.ts";
import { extractContext, tracer } from "../telemetry.ts";

const started = new WeakMap<Request, { at: number; span: Span }>();

/** Probes and scrapes: neither traced nor counted in the API's request metrics. */
const UNOBSERVED = new Set(["/healthz", "/readyz", "/metrics"]);

/** Runs `fn` with the request's server span active, so spans and logs inside join its trace. */
export function inRequestSpan<T>(request: Request, fn: () => T): T {
  const s = started.get(request);
  return s ? context.with(trace.setSpan(context.active(), s.span), fn) : fn();
}

export function observe() {
  return new Elysia({ name: "observe" })
    .onRequest(({ request }) => {
      if (UNOBSERVED.has(new URL(request.url).pathname)) return;
      const carrier = { traceparent: request.headers.get("traceparent") ?? undefined, tracestate: request.headers.get("tracestate") ?? undefined };
      const span = tracer().startSpan(`${request.method} request`, { kind: SpanKind.SERVER }, extractContext(carrier));
      started.set(request, { at: performance.now(), span });
    })
    .onAfterResponse({ as: "global" }, ({ request, route, set }) => {
      const s = started.get(request);
      if (!s) return;
      const status = typeof set.status === "number" ? set.status : 200;
      const labels = { route: route || "unmatched", method: request.method };
      metrics.httpRequests.inc({ ...labels, status: String(status) });
      metrics.httpDuration.observe(labels, (performance.now() - s.at) / 1000);
      s.span.updateName(`${request.method} ${route || "unmatched"}`);
      s.span.setAttributes({ "http.request.method": request.method, "http.route": route || "unmatched", "http.response.status_code": status, "url.path": new URL(request.url).pathname });
      if (status >= 500) s.span.setStatus({ code: SpanStatusCode.ERROR });
      s.span.end();
    });
}
