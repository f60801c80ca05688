/**
 * The dead-letter topic's one record shape, built here for both writers: the executor (a run
 * failed for good) and the rescuer (a run on its last attempt died without an outcome).
 *
 *   {id, shard, user_id, message, target: {url, method} | null, attempts, max_attempts,
 *    errors: [previous error?, final error], reason: "failed" | "run_deadline", failed_at}
 */
import type { Target } from "./jobs/job-input.ts";
import type { OutMessage } from "./kafka.ts";

export type DeadLetterReason = "failed" | "run_deadline";

/** What a record needs of the job (a claimed run's row or the rescuer's doomed run). */
export interface DeadJob {
  id: string;
  shard_id: number;
  user_id: string;
  message: string;
  target: Target | null;
  attempt: number;
  max_attempts: number;
  last_error: string | null;
}

export function deadLetterMessage(job: DeadJob, error: string, reason: DeadLetterReason, failedAt = new Date()): OutMessage {
  const record = {
    id: job.id,
    shard: job.shard_id,
    user_id: job.user_id,
    message: job.message,
    target: job.target ? { url: job.target.url, method: job.target.method } : null,
    attempts: job.attempt,
    max_attempts: job.max_attempts,
    errors: [job.last_error, error].filter((e): e is string => !!e),
    reason,
    failed_at: failedAt.toISOString(),
  };
  return { key: job.id, value: JSON.stringify(record) };
}
