/**
 * Tracing, set up by hand (auto-instrumentation is unreliable on Bun): a tracer provider with a
 * batch OTLP/HTTP exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set, an AsyncLocalStorage context
 * manager so spans nest across awaits, and W3C trace-context propagation, which carries a trace
 * from the API request through the job row and Kafka headers to the executor.
 */
import { context, propagation, trace, type Span, SpanStatusCode, type Context } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

let provider: BasicTracerProvider | null = null;
let exporting = false;

/**
 * True when spans are exported. Per-job spans (dispatch, execute) are made only then: without an
 * exporter they cost CPU on the hot path for nothing, and the job's stored trace context is passed
 * through to Kafka headers unchanged, so a trace still links API request and execution.
 */
export const tracingEnabled = () => exporting;

export function initTelemetry(opts: { endpoint: string | null; serviceName: string; role: string }): void {
  if (provider) return;
  const spanProcessors = opts.endpoint
    ? [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/$/, "")}/v1/traces` }))]
    : [];
  exporting = spanProcessors.length > 0;
  provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": opts.serviceName, "service.instance.role": opts.role }),
    spanProcessors,
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
  attributes: Record<string, string | number | boolean>,
  fn: (span: Span) => Promise<T>,
  parent?: Context,
): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (e) {
      span.recordException(e as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
  });
}

/** The active context as a W3C carrier ({traceparent, tracestate}), for a job row or Kafka headers. */
export function injectContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

export function extractContext(carrier: Record<string, string | undefined> | null | undefined): Context {
  return propagation.extract(context.active(), carrier ?? {});
}
