/**
 * The rescuer, run by a shard's owner every SCHEDULER_RESCUE_INTERVAL (and at once for the runs
 * of an executor that stopped reporting): in-flight jobs whose deadline passed go back to waiting or fail for good (src/jobs/transitions.ts `rescue`), and
 * the dead-letter records of those that failed, written to dead_letter_outbox in the same
 * transaction, are published after it commits, then deleted. A publish that fails leaves them
 * for the next pass; no row lock is held while Kafka answers.
 */
import { backoffDelay } from "../../actors/backoff.ts";
import { TUNING, type Config } from "../config.ts";
import type { Sql } from "../db/databases.ts";
import { rescue } from "../jobs/transitions.ts";
import type { Publisher } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";

export interface RescueResult {
  /** The database's clock when the rescue ran: the next pass looks at deadlines from here. */
  dbNow: Date;
  changed: number;
  deadLettered: number;
  published: number;
}

export async function rescueShard(config: Config, sql: Sql, publisher: Publisher, shard: number, epoch: string, since: Date | null, lostExecutors: string[] = []): Promise<RescueResult> {
  const r = await rescue(sql, shard, epoch, since, (attempt) => backoffDelay(attempt, config.executor.retry), lostExecutors);
  if (r.changed > 0) log.warn("rescued in-flight jobs past their deadline or of a lost executor", { shard, count: r.changed, dead_lettered: r.deadLettered, lost_executors: lostExecutors });
  let published = 0;
  try {
    published = await publishOutbox(sql, publisher, config.kafka.topicDlq, shard);
  } catch (err) {
    log.warn("could not publish dead-letter records; the next rescue will", { shard, err: err as Error });
  }
  return { ...r, published };
}

/** Publishes the shard's outbox records (oldest first), then deletes what went out. */
export async function publishOutbox(sql: Sql, publisher: Publisher, topic: string, shard: number): Promise<number> {
  const rows = await sql<{ job_id: string; attempt: number; record: string }[]>`
    SELECT job_id::text, attempt, record FROM dead_letter_outbox WHERE shard_id = ${shard} ORDER BY created_at LIMIT ${TUNING.scheduler.outboxBatch}`;
  if (rows.length === 0) return 0;
  await publisher.publish(topic, rows.map((r) => ({ key: r.job_id, value: r.record })));
  await sql`
    DELETE FROM dead_letter_outbox o USING unnest(${rows.map((r) => r.job_id)}::bigint[], ${rows.map((r) => r.attempt)}::int[]) AS d(job_id, attempt)
    WHERE o.job_id = d.job_id AND o.attempt = d.attempt`;
  metrics.jobsDeadLettered.inc({ reason: "run_deadline" }, rows.length);
  return rows.length;
}
