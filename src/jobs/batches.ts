/**
 * Batches created all or none across databases, and replayed by their Idempotency-Key.
 *
 * A batch whose jobs all land in one database is one INSERT statement: all or none already
 * (job-store.ts). One that spans databases, or carries an Idempotency-Key, goes through a commit
 * point in the users database (sql/000018):
 *   1. reserve: a `job_batches` row, pending, with its job ids (and the key and request hash);
 *   2. stage:   each database takes its rows into `staged_jobs`, which nothing else reads (a
 *               database that does not answer within TUNING.db.answerWithinMs fails the batch
 *               and is marked out, so the next batches' ids avoid it: src/db/gate.ts);
 *   3. decide:  pending -> committed, only while the request can still be answered (`decideBy`,
 *               before the API's request timeout) — the commit point;
 *   4. move:    each database moves its staged rows into `jobs` (one statement, idempotent).
 * Invariants: a batch's rows are jobs only once it is committed, and then all of them are (a
 * move that fails, its database out, is the keeper's to finish once it answers: the answer
 * lists the rows as written); a batch not committed leaves no job behind (its staged rows are
 * deleted, by the request or, past `staleMs`, by the keeper, which first makes the batch
 * aborted so that a late decision cannot commit it). The decision and the keeper's abort are
 * each conditional on `pending`, so exactly one of them wins.
 */
import { TUNING } from "../config.ts";
import type { Databases, Sql } from "../db/databases.ts";
import { DUE_CHANNEL, duePayload } from "../db/due-notify.ts";
import { log } from "../log.ts";
import { API_COLUMNS, newRows, writtenRow, type ApiRow, type NewJobRow } from "./job-row.ts";

export interface BatchRecord {
  id: string;
  job_ids: string[];
  request_hash: string | null;
  state: "pending" | "committed" | "aborted";
}

/** Thrown when the batch could not be committed in time (or was aborted meanwhile): nothing of it remains. */
export class BatchNotCommitted extends Error {
  constructor(reason: string) {
    super(`the batch was not created: ${reason}`);
    this.name = "BatchNotCommitted";
  }
}

/** Step 1 with a key: reserves it for this batch, or returns the batch that holds it already. */
export async function reserveKeyed(users: Sql, userId: string, key: string, hash: string, batchId: bigint, jobIds: bigint[]): Promise<BatchRecord & { inserted: boolean }> {
  for (;;) {
    const [mine] = await users<BatchRecord[]>`
      INSERT INTO job_batches (id, user_id, key, request_hash, job_ids)
      VALUES (${batchId.toString()}, ${userId}, ${key}, ${hash}, ${jobIds.map(String)}::bigint[])
      ON CONFLICT (user_id, key) WHERE key IS NOT NULL DO NOTHING
      RETURNING id::text, job_ids::text[], request_hash, state`;
    if (mine) return { ...mine, inserted: true };
    const [theirs] = await users<BatchRecord[]>`
      SELECT id::text, job_ids::text[], request_hash, state FROM job_batches WHERE user_id = ${userId} AND key = ${key}`;
    if (theirs) return { ...theirs, inserted: false };
  }
}

/** Step 1 without a key. */
export async function reserve(users: Sql, userId: string, batchId: bigint, jobIds: bigint[]): Promise<void> {
  await users`INSERT INTO job_batches (id, user_id, job_ids) VALUES (${batchId.toString()}, ${userId}, ${jobIds.map(String)}::bigint[])`;
}

/**
 * A repeated request takes over a keyed batch that was not committed (its first request failed,
 * timed out or died): under a new batch id, the same job ids. False when it changed meanwhile.
 */
export async function takeOver(users: Sql, userId: string, key: string, from: string, batchId: bigint): Promise<boolean> {
  const rows = await users`
    UPDATE job_batches SET id = ${batchId.toString()}, state = 'pending', created_at = now()
    WHERE user_id = ${userId} AND key = ${key} AND id = ${from} AND state <> 'committed' RETURNING 1`;
  return rows.length === 1;
}

/** Step 2: one database's rows of the batch, staged. */
export async function stage(sql: Sql, batchId: bigint, r: NewJobRow[]): Promise<void> {
  await sql`
    INSERT INTO staged_jobs (batch_id, id, shard_id, user_id, kind, priority, message, target, execute_at, max_attempts, trace_context, idempotency_key)
    SELECT ${batchId.toString()}, id, shard_id, user_id, kind, priority, message, target::jsonb, execute_at, max_attempts, trace_context::jsonb, idempotency_key
    FROM ${newRows(sql, r)}
    ON CONFLICT DO NOTHING`;
}

/** Step 3, the commit point: true when this call committed the batch (or it was already). */
export async function decide(users: Sql, batchId: bigint, decideBy: number): Promise<boolean> {
  const [r] = await users<{ state: string }[]>`
    WITH d AS (
      UPDATE job_batches SET state = 'committed'
      WHERE id = ${batchId.toString()} AND state = 'pending' AND now() < ${new Date(decideBy)} RETURNING state)
    SELECT state FROM d UNION ALL SELECT state FROM job_batches WHERE id = ${batchId.toString()} LIMIT 1`;
  return r?.state === "committed";
}

/**
 * Step 4: the database's staged rows of the batch move into `jobs` (those already there stay as
 * they are); returns the rows moved. The shards' owners hear of them at the commit (due-notify).
 */
export async function move(sql: Sql, batchId: string): Promise<ApiRow[]> {
  const rows = await sql<ApiRow[]>`
    WITH moved AS (DELETE FROM staged_jobs WHERE batch_id = ${batchId} RETURNING *)
    INSERT INTO jobs (id, shard_id, user_id, kind, priority, message, target, execute_at, due_at, max_attempts, trace_context, idempotency_key)
    SELECT id, shard_id, user_id, kind, priority, message, target, execute_at, greatest(execute_at, now()), max_attempts, trace_context, idempotency_key FROM moved
    ON CONFLICT (id) DO NOTHING
    RETURNING ${sql.unsafe(API_COLUMNS)}`;
  if (rows.length > 0) {
    const now = Date.now();
    await sql`SELECT pg_notify(${DUE_CHANNEL}, ${duePayload(rows.map((r) => ({ shard: r.shard_id, dueAt: Math.max(r.execute_at.getTime(), now) })))})`;
  }
  return rows;
}

/**
 * The batch is not committed: marks it aborted (unless it was decided meanwhile) and deletes its
 * staged rows where the database answers (an out database's are the keeper's: the batch is
 * aborted first, so they can never be moved). True when aborted.
 */
export async function abort(dbs: Databases, batchId: string): Promise<boolean> {
  const [r] = await dbs.users<{ state: string }[]>`
    WITH a AS (UPDATE job_batches SET state = 'aborted' WHERE id = ${batchId} AND state = 'pending' RETURNING state)
    SELECT state FROM a UNION ALL SELECT state FROM job_batches WHERE id = ${batchId} LIMIT 1`;
  if (r?.state === "committed") return false;
  await Promise.allSettled(dbs.all.map((sql, i) => dbs.gate.within(i, TUNING.db.answerWithinMs, () => sql`DELETE FROM staged_jobs WHERE batch_id = ${batchId}`)));
  return true;
}

/**
 * Writes a batch through steps 2-4 (after its reservation under `batchId`): returns its jobs in
 * input order, or throws BatchNotCommitted (or the database's error) having left none of them.
 */
export async function writeStaged(dbs: Databases, batchId: bigint, byDb: Map<Sql, NewJobRow[]>, decideBy: number): Promise<ApiRow[]> {
  const id = batchId.toString();
  try {
    await Promise.all([...byDb].map(([sql, rows]) => dbs.gate.within(dbs.all.indexOf(sql), TUNING.db.answerWithinMs, () => stage(sql, batchId, rows))));
    if (Date.now() >= decideBy || !(await decide(dbs.users, batchId, decideBy))) throw new BatchNotCommitted("no answer in time from every database");
  } catch (err) {
    // Not committed (or not known to be: the decision's answer was lost): it must leave nothing.
    // What cannot be deleted now (a database out) is the keeper's: it aborts the batch first.
    await abort(dbs, id).then(
      (aborted) => {
        if (!aborted) log.warn("a batch's decision was answered with an error but committed; its jobs are created", { batch: id });
      },
      (e) => log.warn("could not abort a batch not committed; the batch keeper will", { batch: id, err: e as Error }),
    );
    throw err;
  }
  const now = new Date();
  const moved = await Promise.all(
    [...byDb].map(([sql, rows]) =>
      move(sql, id).catch((err) => {
        log.warn("a committed batch's rows wait in a database that is out; the batch keeper moves them once it answers", { batch: id, err: err as Error });
        return rows.map((r) => writtenRow(r, now));
      }),
    ),
  );
  return moved.flat();
}

/** Reads a committed batch's jobs (finishing its moves first), in its order. */
export async function readCommitted(dbs: Databases, batch: BatchRecord, forId: (id: string) => Sql): Promise<ApiRow[]> {
  await Promise.all(dbs.all.map((sql) => move(sql, batch.id)));
  const byDb = new Map<Sql, string[]>();
  for (const id of batch.job_ids) {
    const sql = forId(id);
    byDb.set(sql, [...(byDb.get(sql) ?? []), id]);
  }
  const rows = (await Promise.all([...byDb].map(([sql, ids]) => sql<ApiRow[]>`SELECT ${sql.unsafe(API_COLUMNS)} FROM all_jobs WHERE id = ANY(${ids}::bigint[])`))).flat();
  const byId = new Map(rows.map((r) => [r.id, r]));
  return batch.job_ids.flatMap((id) => byId.get(id) ?? []);
}

/**
 * The keeper's pass over one database: staged rows older than `staleMs` belong to a batch whose
 * request is long over. A committed batch's are moved; any other's batch is aborted and its rows
 * deleted. Returns the batches finished (moved or aborted).
 */
export async function sweepStaged(dbs: Databases, sql: Sql, staleMs: number): Promise<{ moved: number; aborted: number }> {
  const stale = await sql<{ batch_id: string }[]>`
    SELECT DISTINCT batch_id::text FROM staged_jobs WHERE staged_at < now() - ${staleMs} * interval '1 millisecond' LIMIT 1000`;
  let moved = 0;
  let aborted = 0;
  for (const { batch_id } of stale) {
    const [b] = await dbs.users<{ state: string }[]>`SELECT state FROM job_batches WHERE id = ${batch_id}`;
    if (b?.state === "committed") {
      await move(sql, batch_id);
      moved++;
    } else if (!b) {
      // Its record is gone (retention ran while this database was out for longer than
      // IDEMPOTENCY_KEY_TTL): whether it was committed is unknown, so its rows stay for an operator.
      log.error("staged rows of a batch whose record is gone: left in staged_jobs for an operator to move or delete", { batch: batch_id });
    } else if (await abort(dbs, batch_id)) aborted++;
    else {
      await move(sql, batch_id);
      moved++;
    }
  }
  return { moved, aborted };
}
