/**
 * Per-request observability: a server span (continuing a caller's `traceparent` if sent),
 * request count and latency by route template and status (the seed's API dashboards and the
 * 5xx alert).
 */
import { context, SpanKind, trace, type Span } from "@opentelemetry/api";
import { Elysia } from "elysia";
import { metrics } from "../metrics.ts";
import { extractContext, tracer } from "../telemetry.ts";

const started = new WeakMap<Request, { at: number; span: Span }>();

/** Runs `fn` with the request's server span active, so spans and logs inside join its trace. */
export function inRequestSpan<T>(request: Request, fn: () => T): T {
  const s = started.get(request);
  return s ? context.with(trace.setSpan(context.active(), s.span), fn) : fn();
}

export function observe() {
  return new Elysia({ name: "observe" })
    .onRequest(({ request }) => {
      const carrier = { traceparent: request.headers.get("traceparent") ?? undefined, tracestate: request.headers.get("tracestate") ?? undefined };
      const span = tracer().startSpan(`${request.method} request`, { kind: SpanKind.SERVER }, extractContext(carrier));
      started.set(request, { at: performance.now(), span });
    })
    .onAfterResponse({ as: "global" }, ({ request, route, set }) => {
      const s = started.get(request);
      const status = typeof set.status === "number" ? set.status : 200;
      const labels = { route: route || "unmatched", method: request.method };
      metrics.httpRequests.inc({ ...labels, status: String(status) });
      if (!s) return;
      metrics.httpDuration.observe((performance.now() - s.at) / 1000, labels);
      s.span.updateName(`${request.method} ${route || "unmatched"}`);
      s.span.setAttribute("http.route", route || "unmatched");
      s.span.setAttribute("http.response.status_code", status);
      s.span.end();
    });
}
