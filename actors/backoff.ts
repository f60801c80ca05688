/**
 * Retry delay after failed attempt `attempt` (1-based): exponential from `baseMs`, capped at
 * `maxMs`, with "equal jitter" (half fixed, half random) so retries of many jobs that failed
 * together spread out but never retry sooner than half the nominal delay.
 */
export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

/** The one retry policy: the executor after a failed attempt, the rescuer after a lost run (RETRY_BACKOFF_*). */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 40)));
  const half = exp / 2;
  return Math.round(half + random() * half);
}
