/**
 * The public API, as the console calls it. Tokens live in sessionStorage (this tab only, gone
 * when it closes; never in a URL). Every failure becomes an ApiFailure whose message is words a
 * person can act on: the API's own message and field details, or what went wrong on the way.
 */

import type { UserView } from "../users/user-store.ts";

export interface Problem { path: string; message: string }

export class ApiFailure extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly details: Problem[] = []) {
    super(message);
  }
  /** The message for one field (a JSON pointer such as /target/url), if the API named it. */
  forField(path: string): string | undefined {
    return this.details.find((d) => d.path === path)?.message;
  }
}

const USER_KEY = "fairshare.token";
const ADMIN_KEY = "fairshare.admin";
const TIMEOUT_MS = 15_000;

export const session = {
  user: () => sessionStorage.getItem(USER_KEY),
  admin: () => sessionStorage.getItem(ADMIN_KEY),
  setUser: (token: string) => sessionStorage.setItem(USER_KEY, token),
  setAdmin: (token: string) => sessionStorage.setItem(ADMIN_KEY, token),
  clear: (which: "user" | "admin") => sessionStorage.removeItem(which === "user" ? USER_KEY : ADMIN_KEY),
  /** Seconds since the epoch when the user's token expires (from its payload), or null. */
  userExpiry(): number | null {
    const token = session.user();
    try {
      const payload = JSON.parse(atob(token!.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/")));
      return typeof payload.exp === "number" ? payload.exp : null;
    } catch {
      return null;
    }
  },
};

/** Called when a token is refused (expired, revoked): the app signs out and says why. */
let onUnauthorized: (which: "user" | "admin", message: string) => void = () => {};
export function whenUnauthorized(fn: typeof onUnauthorized): void {
  onUnauthorized = fn;
}

export async function call<T>(method: string, path: string, opts: { body?: unknown; as?: "user" | "admin" | "none"; headers?: Record<string, string> } = {}): Promise<T> {
  const as = opts.as ?? "user";
  const token = as === "user" ? session.user() : as === "admin" ? session.admin() : null;
  const headers: Record<string, string> = { accept: "application/json", ...opts.headers };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: abort.signal });
  } catch (e) {
    throw abort.signal.aborted
      ? new ApiFailure(0, "timeout", `The API did not answer within ${TIMEOUT_MS / 1000} seconds; it will be tried again.`)
      : new ApiFailure(0, "network", `Cannot reach the API (${(e as Error).message}); check your connection.`);
  } finally {
    clearTimeout(timer);
  }
  let json: any = null;
  try {
    json = await res.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  if (res.ok && json?.success !== false) return json as T;
  const err = json?.error;
  const failure = err?.code
    ? new ApiFailure(res.status, err.code, err.message, Array.isArray(err.details) ? err.details : [])
    : new ApiFailure(res.status, "http_error", `The API answered ${res.status} ${res.statusText}.`);
  if (res.status === 429 || res.status === 503) {
    const after = res.headers.get("retry-after");
    if (after) failure.message += ` Try again in ${after} s.`;
  }
  // Only while the refused token is still the session's: a late answer to a token already
  // replaced or signed out changes nothing.
  if (res.status === 401 && as !== "none" && token && token === (as === "user" ? session.user() : session.admin())) {
    onUnauthorized(as, as === "user" ? "Your session has expired or was ended. Sign in again." : "The admin token was refused. Enter it again.");
  }
  throw failure;
}

/** A failure's words, for any error. */
export function words(e: unknown): string {
  if (e instanceof ApiFailure) {
    const fields = e.details.filter((d) => d.path && d.path !== "/").map((d) => `${d.path.slice(1)}: ${d.message}`);
    return fields.length ? `${e.message}: ${fields.join("; ")}` : e.message;
  }
  return (e as Error)?.message ?? String(e);
}

// ---- Shapes the API returns ----------------------------------------------------------------

export interface Job {
  id: string;
  user_id: number;
  kind: string;
  priority: string;
  message: string;
  status: string;
  execute_at: string;
  next_attempt_at: string | null;
  shard_id: number;
  attempt: number;
  max_attempts: number;
  target: { url: string; method: string; headers: Record<string, string>; timeout_ms: number | null } | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
  trace_id: string | null;
}

export interface Attempt {
  attempt: number;
  started_at: string;
  finished_at: string;
  outcome: string;
  error_class: string | null;
  error: string | null;
  http_status: number | null;
  duration_ms: number | null;
}

/** id, username, job_weight, disabled, max_running (null: the default), paused. */
export type User = UserView;

export interface Page<T> { data: T[]; next_cursor: string | null }
export interface One<T> { data: T }

export { JOB_STATUSES as STATUSES } from "../jobs/lifecycle.ts";
