/**
 * Retry delay after failed attempt `attempt` (1-based): exponential from `baseMs`, capped at
 * `maxMs`, with "equal jitter" (half fixed, half random) so retries of many jobs that failed
 * together spread out but never retry sooner than half the nominal delay.
 */
export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1_000, maxMs: 10 * 60_000 };

export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 40)));
  const half = exp / 2;
  return Math.round(half + random() * half);
}
