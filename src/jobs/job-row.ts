/**
 * A job's row, the one shape every part reads: the API's full row, the executor's claimed run
 * and the dead-letter record's job are projections of it.
 */
import type { JobKind, PriorityLevel, Target } from "./job-input.ts";
import type { JobStatus } from "./lifecycle.ts";
import type { Sql } from "../db/databases.ts";

export interface JobRow {
  id: string;
  shard_id: number;
  user_id: string;
  kind: JobKind;
  /** 0 high, 1 normal, 2 low (PRIORITIES in job-input.ts names them). */
  priority: PriorityLevel;
  message: string;
  target: Target | null;
  status: JobStatus;
  execute_at: Date;
  /** When the next attempt may start (execute_at for the first, the retry time after). */
  due_at: Date;
  attempt: number;
  max_attempts: number;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  trace_context: Record<string, string> | null;
  /** When the rescuer may take an in-flight run for lost (its timeout and JOB_RUN_GRACE after the claim). */
  deadline_at: Date | null;
}

/** A job about to be created: what the API writes (the other columns take the table's defaults). */
export type NewJobRow = Pick<JobRow, "id" | "shard_id" | "user_id" | "kind" | "priority" | "message" | "target" | "execute_at" | "max_attempts"> & {
  idempotency_key: string | null;
  trace_context: Record<string, string>;
};

/**
 * New rows as a relation `u(id, shard_id, user_id, kind, priority, message, target, execute_at,
 * max_attempts, trace_context, idempotency_key)` (target and trace_context as JSON text), from
 * array parameters: the statement's text stays the same whatever the number of rows.
 */
export function newRows(sql: Sql, r: NewJobRow[]) {
  return sql`unnest(
      ${r.map((x) => x.id)}::bigint[], ${r.map((x) => x.shard_id)}::int[], ${r.map((x) => x.user_id)}::bigint[],
      ${r.map((x) => x.kind)}::text[], ${r.map((x) => x.priority)}::smallint[], ${r.map((x) => x.message)}::text[],
      ${r.map((x) => (x.target ? JSON.stringify(x.target) : null))}::text[],
      ${r.map((x) => x.execute_at.toISOString())}::timestamptz[], ${r.map((x) => x.max_attempts)}::int[],
      ${r.map((x) => JSON.stringify(x.trace_context))}::text[], ${r.map((x) => x.idempotency_key)}::text[])
      AS u(id, shard_id, user_id, kind, priority, message, target, execute_at, max_attempts, trace_context, idempotency_key)`;
}

/** The row a new job has once written at `now` (for a batch committed whose rows a database has yet to take: src/jobs/batches.ts). */
export function writtenRow(r: NewJobRow, now: Date): ApiRow {
  const due = r.execute_at > now ? r.execute_at : now;
  return { ...r, status: "created", due_at: due, attempt: 0, last_error: null, created_at: now, updated_at: now, started_at: null, finished_at: null };
}

/** What the API returns of a row. */
export type ApiRow = Omit<JobRow, "deadline_at">;
export const API_COLUMNS = "id, shard_id, user_id, kind, priority, message, target, status, execute_at, due_at, attempt, max_attempts, last_error, created_at, updated_at, started_at, finished_at, trace_context";

/** What a run needs of its job: the executor's claim returns it. */
export type ClaimedJob = Pick<JobRow, "id" | "shard_id" | "user_id" | "kind" | "message" | "target" | "attempt" | "max_attempts" | "execute_at" | "due_at" | "last_error" | "trace_context"> & {
  deadline_at: Date;
};
export const CLAIMED_COLUMNS = "id, shard_id, user_id, kind, message, target, attempt, max_attempts, execute_at, due_at, last_error, trace_context, deadline_at";

/** What a dead-letter record needs of its job. */
export type DeadJob = Pick<JobRow, "id" | "shard_id" | "user_id" | "message" | "target" | "attempt" | "max_attempts" | "last_error">;
