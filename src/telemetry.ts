/**
 * Tracing, set up by hand (auto-instrumentation is unreliable on Bun): a tracer provider with a
 * batch exporter chosen by OTEL_TRACES_EXPORTER (OTLP/HTTP, e.g. Jaeger in compose; Zipkin v2
 * JSON, e.g. the local cluster's `TRACING=zipkin`; or none), an AsyncLocalStorage context manager
 * so spans nest across awaits, and W3C trace-context propagation.
 *
 * One job, one trace: the API request's context is stored with the job (`trace_context`) and
 * travels in the due message's body, per job. Not in Kafka headers: a due message carries up to
 * 100 jobs (src/due-message.ts), each from its own trace, and headers belong to the message. The
 * retries of a job are dispatched from the same stored context, so every attempt is in its trace.
 *
 * Span names and attributes follow the OpenTelemetry semantic conventions: HTTP server and client
 * (`http.request.method`, `http.route`, `url.full`, `http.response.status_code`), database
 * (`db.system.name`, `db.operation.name`, `db.collection.name`) and messaging
 * (`messaging.system`, `messaging.operation.type`, `messaging.destination.name`).
 */
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type TimeInput } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { ZipkinExporter } from "@opentelemetry/exporter-zipkin";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SpanExporter,
} from "@opentelemetry/sdk-trace-base";
import type { Config } from "./config.ts";

let provider: BasicTracerProvider | null = null;
let exporting = false;

/**
 * True when spans are exported. Per-job spans (dispatch, execute) are made only then: without an
 * exporter they cost CPU on the hot path for nothing, and the job's stored trace context is passed
 * through unchanged, so a job still carries its trace id.
 */
export const tracingEnabled = () => exporting;

function exporterFor(otel: Config["otel"], serviceName: string): SpanExporter | null {
  switch (otel.exporter) {
    case "otlp":
      return new OTLPTraceExporter({ url: `${otel.otlpEndpoint.replace(/\/$/, "")}/v1/traces` });
    case "zipkin":
      return new ZipkinExporter({ url: otel.zipkinEndpoint, serviceName });
    case "none":
      return null;
  }
}

/** OTEL_TRACES_SAMPLER: the parent-based ones follow the decision of the trace's first span (the API request). */
function samplerFor(otel: Config["otel"]): Sampler {
  const root = otel.sampler.endsWith("always_on") ? new AlwaysOnSampler() : otel.sampler.endsWith("always_off") ? new AlwaysOffSampler() : new TraceIdRatioBasedSampler(otel.samplerRatio);
  return otel.sampler.startsWith("parentbased_") ? new ParentBasedSampler({ root }) : root;
}

export function initTelemetry(otel: Config["otel"], role: string): void {
  if (provider) return;
  const serviceName = `${otel.serviceName}-${role}`;
  const exporter = exporterFor(otel, serviceName);
  exporting = exporter !== null;
  provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName, "service.instance.role": role }),
    sampler: samplerFor(otel),
    // The default queue (2,048 spans) drops spans of a burst; a job makes about eight.
    spanProcessors: exporter ? [new BatchSpanProcessor(exporter, { maxQueueSize: 65_536, maxExportBatchSize: 2_048, scheduledDelayMillis: 1_000 })] : [],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
}

export async function shutdownTelemetry(): Promise<void> {
  await provider?.shutdown().catch(() => {});
}

export const tracer = () => trace.getTracer("fairshare");

/** Runs `fn` in a new active span; records an exception and error status if it throws. */
export async function inSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
  opts: { parent?: Context; kind?: SpanKind } = {},
): Promise<T> {
  return tracer().startActiveSpan(name, { attributes, kind: opts.kind ?? SpanKind.INTERNAL }, opts.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      failed(span, e);
      throw e;
    } finally {
      span.end();
    }
  });
}

/**
 * `fn` in a child span of the active one when that span is recorded (exported and sampled); just
 * `fn` otherwise: the children of an unsampled trace would be dropped anyway, and on hot paths
 * even a non-recording span and its context switch cost CPU (measured: docs/capacity.md).
 */
export function traced<T>(name: string, opts: { kind?: SpanKind; attributes?: Attributes }, fn: () => Promise<T>): Promise<T> {
  return recordingActive() ? inSpan(name, opts.attributes ?? {}, fn, { kind: opts.kind }) : fn();
}

/** True when the active span is recorded: spans made under it are exported. */
export const recordingActive = () => exporting && trace.getActiveSpan()?.isRecording() === true;

export function failed(span: Span, e: unknown): void {
  span.recordException(e as Error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error)?.message ?? String(e) });
}

/** A database client span, by the conventions: `UPDATE jobs`. */
export function dbSpanOptions(operation: string, table: string, startTime?: TimeInput) {
  return {
    kind: SpanKind.CLIENT,
    startTime,
    attributes: { "db.system.name": "postgresql", "db.operation.name": operation, "db.collection.name": table },
  };
}

/** A messaging span, by the conventions: `send jobs.due` (producer) or `process jobs.due` (consumer). */
export function messagingSpanOptions(operation: "send" | "process", topic: string, extra: Attributes = {}, startTime?: TimeInput) {
  return {
    kind: operation === "send" ? SpanKind.PRODUCER : SpanKind.CONSUMER,
    startTime,
    attributes: { "messaging.system": "kafka", "messaging.operation.type": operation, "messaging.operation.name": operation, "messaging.destination.name": topic, ...extra },
  };
}

/** The context as a W3C carrier ({traceparent, tracestate}), for a job row or an outgoing call. */
export function injectContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

export function extractContext(carrier: Record<string, string | undefined> | null | undefined): Context {
  return propagation.extract(context.active(), carrier ?? {});
}

/** The trace id in a stored W3C carrier, or null. */
export function traceIdOf(carrier: Record<string, string> | null | undefined): string | null {
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(carrier?.traceparent ?? "");
  return m && m[1] !== "0".repeat(32) ? m[1]! : null;
}
