/**
 * The dead-letter topic's one record shape, built here for both writers: the executor (a run
 * failed for good) and the rescuer (a run on its last attempt died without an outcome; it
 * stores the record in dead_letter_outbox and publishes it after its transaction commits).
 *
 *   {id, shard, user_id, message, target: {url, method} | null, attempts, max_attempts,
 *    errors: [previous error?, final error], reason: "failed" | "run_deadline", failed_at}
 *
 * Keyed by job id. Delivery is at least once: a crash between publish and record publishes again.
 */
import type { DeadJob } from "./jobs/job-row.ts";
import type { OutMessage } from "./kafka.ts";

export type DeadLetterReason = "failed" | "run_deadline";

export function deadLetterRecord(job: DeadJob, error: string, reason: DeadLetterReason, failedAt = new Date()) {
  return {
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
}
export type DeadLetterRecord = ReturnType<typeof deadLetterRecord>;

export function deadLetterMessage(job: DeadJob, error: string, reason: DeadLetterReason, failedAt = new Date()): OutMessage {
  return { key: job.id, value: JSON.stringify(deadLetterRecord(job, error, reason, failedAt)) };
}
