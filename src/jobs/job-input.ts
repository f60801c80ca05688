/**
 * Pure validation of job input beyond its JSON shape (which the route's schema checks):
 * the execute_at format and horizon, and the HTTP target. Returns problems with JSON-pointer
 * paths so a batch can say which item is wrong.
 */
export interface TargetInput {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  timeout_ms?: number;
}

export interface JobInput {
  kind?: string;
  message: string;
  execute_at: string;
  max_attempts?: number;
  target?: TargetInput | null;
  priority?: Priority;
}

// A type alias, not an interface, so it is assignable to postgres.js's JSON parameter type.
export type Target = {
  url: string;
  method: string;
  headers: Record<string, string>;
  timeout_ms: number | null;
};

export interface JobSpec {
  kind: JobKind;
  message: string;
  executeAt: Date;
  maxAttempts: number;
  target: Target | null;
  /** jobs.priority: PRIORITIES' index (0 high, 1 normal, 2 low). */
  priority: PriorityLevel;
}

/**
 * Which of a user's due jobs goes first (fair share still decides which user): the API's names,
 * in the order of the numbers stored in jobs.priority and carried in FairItem.priority (the
 * index: 0 high, 1 normal, 2 low). The one place names and numbers meet.
 */
export const PRIORITIES = ["high", "normal", "low"] as const;
export type Priority = (typeof PRIORITIES)[number];
export type PriorityLevel = 0 | 1 | 2;
/** A job that names no priority. */
export const DEFAULT_PRIORITY: Priority = "normal";
export const priorityLevel = (name: Priority): PriorityLevel => PRIORITIES.indexOf(name) as PriorityLevel;
/** The name of a stored level (a level outside 0-2 cannot be stored: the column's CHECK). */
export const priorityName = (level: number): Priority => PRIORITIES[level] ?? DEFAULT_PRIORITY;

/** What runs a job (src/executor/handlers.ts): `log` writes the message; `http` calls `target`. */
export const JOB_KINDS = ["log", "http"] as const;
export type JobKind = (typeof JOB_KINDS)[number];

export interface Problem {
  path: string;
  message: string;
}

export interface InputLimits {
  jobHorizonMs: number;
  defaultMaxAttempts: number;
}

// ISO-8601 date-time with a mandatory offset: 2024-05-01T12:00:00Z, ...12:00:00.123456+07:00
const ISO_WITH_OFFSET = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:?\d{2})$/;

/** Parses an ISO-8601 timestamp that carries an offset; null when malformed or impossible. */
export function parseTimestamp(raw: string): Date | null {
  const m = ISO_WITH_OFFSET.exec(raw);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac = "", off] = m;
  const ms = frac ? frac.slice(1, 4).padEnd(3, "0") : "000";
  const offset = off === "Z" || off === "z" ? "Z" : `${off!.slice(0, 3)}:${off!.slice(-2)}`;
  const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}.${ms}${offset}`);
  if (Number.isNaN(date.getTime())) return null;
  // Reject dates JS silently rolls over (2024-02-30 -> March 1st).
  const check = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (check.getUTCDate() !== Number(d) || check.getUTCMonth() !== Number(mo) - 1) return null;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return null;
  return date;
}

const FORBIDDEN_HEADERS = new Set([
  "host", "content-length", "transfer-encoding", "connection", "upgrade", "x-signature", "x-signature-timestamp",
]);

function checkTarget(t: TargetInput, at: string, problems: Problem[]): Target | null {
  let url: URL;
  try {
    url = new URL(t.url);
  } catch {
    problems.push({ path: `${at}/url`, message: "must be an absolute http:// or https:// URL" });
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    problems.push({ path: `${at}/url`, message: "must use http or https" });
  }
  if (url.username || url.password) {
    problems.push({ path: `${at}/url`, message: "must not embed credentials; use headers" });
  }
  const headers = t.headers ?? {};
  const names = Object.keys(headers);
  if (names.length > 32) problems.push({ path: `${at}/headers`, message: "at most 32 headers" });
  for (const name of names) {
    if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/.test(name)) {
      problems.push({ path: `${at}/headers/${name}`, message: "not a valid header name" });
    } else if (FORBIDDEN_HEADERS.has(name.toLowerCase())) {
      problems.push({ path: `${at}/headers/${name}`, message: "is set by the executor and cannot be overridden" });
    } else if (/[\r\n\0]/.test(headers[name]!)) {
      problems.push({ path: `${at}/headers/${name}`, message: "must not contain control characters" });
    }
  }
  return { url: url.toString(), method: (t.method ?? "POST").toUpperCase(), headers, timeout_ms: t.timeout_ms ?? null };
}

/**
 * An execute_at, at most `horizonMs` ahead. A past one means "run now": it is clamped to `now`,
 * so lateness is measured from when the job could first run.
 */
export function parseExecuteAt(raw: string, now: number, horizonMs: number, path: string): { date: Date } | { problem: Problem } {
  const when = parseTimestamp(raw);
  if (!when) return { problem: { path, message: "must be an ISO-8601 date-time with an offset, e.g. 2030-01-02T03:04:05Z or 2030-01-02T10:04:05+07:00" } };
  if (when.getTime() - now > horizonMs) return { problem: { path, message: `must be at most ${Math.round(horizonMs / 86_400_000)} days ahead` } };
  return { date: new Date(Math.max(when.getTime(), now)) };
}

/** Validates one job. */
export function checkJob(input: JobInput, now: number, limits: InputLimits, at = ""): { spec?: JobSpec; problems: Problem[] } {
  const problems: Problem[] = [];
  const when = parseExecuteAt(input.execute_at, now, limits.jobHorizonMs, `${at}/execute_at`);
  if ("problem" in when) problems.push(when.problem);
  if (input.message.includes("\0")) problems.push({ path: `${at}/message`, message: "must not contain NUL characters" });
  const target = input.target ? checkTarget(input.target, `${at}/target`, problems) : null;
  // The kind defaults from the target; a given kind must agree with it.
  const kind = (input.kind ?? (input.target ? "http" : "log")) as JobKind;
  if (kind === "http" && !input.target) problems.push({ path: `${at}/target`, message: "an http job needs a target" });
  if (kind === "log" && input.target) problems.push({ path: `${at}/target`, message: "a log job takes no target" });
  if (problems.length > 0) return { problems };
  return {
    problems,
    spec: {
      kind,
      message: input.message,
      executeAt: (when as { date: Date }).date,
      maxAttempts: input.max_attempts ?? limits.defaultMaxAttempts,
      target,
      priority: priorityLevel(input.priority ?? DEFAULT_PRIORITY),
    },
  };
}
