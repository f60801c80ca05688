/**
 * Structured JSON logs, one object per line on stdout, stamped with the active trace id so a
 * log line can be found from a trace and back. Fields name the job, shard and role involved.
 * Lines written in one turn of the event loop go out in one write (the `log` handler writes a
 * line per job: a write each cost more than the job); an error line, and whatever is buffered
 * when the process exits, are written at once.
 */
import { writeSync } from "node:fs";
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
  buffered.push(JSON.stringify(line));
  if (level === "error") flushLog();
  else if (!flushQueued) {
    flushQueued = true;
    setImmediate(() => flushLog());
  }
}

let buffered: string[] = [];
let flushQueued = false;

/** Writes the buffered lines; `sync` when the process is about to exit. */
export function flushLog(sync = false): void {
  flushQueued = false;
  if (buffered.length === 0) return;
  const out = buffered.join("\n") + "\n";
  buffered = [];
  if (!sync) process.stdout.write(out);
  else {
    try {
      writeSync(1, out);
    } catch {
      process.stdout.write(out); // a non-blocking pipe that is full: best effort
    }
  }
}
process.on("exit", () => flushLog(true));

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => write("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => write("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => write("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => write("error", msg, fields),
};
