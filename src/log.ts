/**
 * Structured JSON logs, one object per line on stdout, stamped with the active trace id so a
 * log line can be found from a trace and back. Fields name the job, shard and role involved.
 */
import { trace } from "@opentelemetry/api";

type Level = "debug" | "info" | "warn" | "error";
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold = RANK.info;
let base: Record<string, unknown> = {};

export function configureLog(level: Level, fields: Record<string, unknown>): void {
  threshold = RANK[level];
  base = fields;
}

function write(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (RANK[level] < threshold) return;
  const span = trace.getActiveSpan()?.spanContext();
  const line: Record<string, unknown> = { ts: new Date().toISOString(), level, msg, ...base, ...fields };
  if (span) line.trace_id = span.traceId;
  for (const [k, v] of Object.entries(line)) {
    if (typeof v === "bigint") line[k] = v.toString();
    else if (v instanceof Error) line[k] = { name: v.name, message: v.message };
  }
  process.stdout.write(JSON.stringify(line) + "\n");
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => write("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => write("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => write("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => write("error", msg, fields),
};
