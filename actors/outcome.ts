/**
 * What a run's result means for the job. Pure.
 * - retryable: timeouts, connection errors, HTTP 5xx and 429: try again later if attempts remain;
 * - permanent: any other 4xx, a 3xx (redirects are not followed), an invalid or refused target.
 */
import { backoffDelay, type BackoffPolicy } from "./backoff.ts";

/** Why a run failed, for the attempt history: a stable vocabulary, not the message. */
export type ErrorClass = "http_status" | "timeout" | "connection" | "dns" | "target_refused" | "handler" | "run_lost";

export type RunResult =
  | { ok: true; httpStatus?: number }
  | { ok: false; retryable: boolean; error: string; errorClass: ErrorClass; httpStatus?: number };

export type Decision =
  | { kind: "succeeded" }
  | { kind: "retry"; delayMs: number; error: string }
  | { kind: "failed"; error: string };

export function classifyHttpStatus(status: number): RunResult {
  const failed = { errorClass: "http_status" as const, httpStatus: status };
  if (status >= 200 && status < 300) return { ok: true, httpStatus: status };
  if (status === 429 || status >= 500) return { ok: false, retryable: true, error: `HTTP ${status}`, ...failed };
  if (status >= 300 && status < 400) return { ok: false, retryable: false, error: `HTTP ${status} (redirects are not followed)`, ...failed };
  return { ok: false, retryable: false, error: `HTTP ${status}`, ...failed };
}

/** Whether the run's result ends the job as `failed`: permanent, or retryable with no attempts left. */
export function failsForGood(result: RunResult, attempt: number, maxAttempts: number): boolean {
  return !result.ok && (!result.retryable || attempt >= maxAttempts);
}

/** `attempt` is the number of the run that just finished (1 for the first). */
export function decide(result: RunResult, attempt: number, maxAttempts: number, policy: BackoffPolicy, random?: () => number): Decision {
  if (result.ok) return { kind: "succeeded" };
  if (failsForGood(result, attempt, maxAttempts)) {
    return { kind: "failed", error: result.retryable ? `${result.error} (attempts exhausted: ${attempt}/${maxAttempts})` : result.error };
  }
  return { kind: "retry", delayMs: backoffDelay(attempt, policy, random), error: result.error };
}
