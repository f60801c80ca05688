/**
 * Every guarded transition against a row in every status, on the real database: a transition
 * changes a row exactly when the row's status is in its `from` list (src/jobs/lifecycle.ts),
 * so the table is what the SQL does, not a comment about it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { acquireFence } from "../src/db/fence.ts";
import type { ClaimedJob } from "../src/jobs/job-row.ts";
import { IN_FLIGHT, JOB_STATUSES, TRANSITIONS, type JobStatus, type TransitionName } from "../src/jobs/lifecycle.ts";
import * as t from "../src/jobs/transitions.ts";
import { freshDatabases } from "./support/env.ts";

const SHARD = 0;
const USER = "7";
let db: Awaited<ReturnType<typeof freshDatabases>>;
let sql: Sql;
let abandoned: string;
let epoch: string;
let nextId = 1_000;

beforeAll(async () => {
  db = await freshDatabases(1);
  sql = connect(db.urls[0]!, 2);
  abandoned = (await acquireFence(sql, SHARD, "dead-owner")).epoch;
  epoch = (await acquireFence(sql, SHARD, "owner")).epoch;
});
afterAll(async () => {
  await sql.end();
  await db.drop();
});

/** A job in `status` on its first attempt, dispatched under the abandoned epoch, due and past any deadline. */
async function jobIn(status: JobStatus): Promise<string> {
  const id = String(nextId++);
  await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
    VALUES (${id}, ${SHARD}, ${USER}, 'm', now() - interval '1 second', now() - interval '1 second', 3)`;
  const inFlight = (IN_FLIGHT as readonly string[]).includes(status);
  const terminal = ["succeeded", "failed", "cancelled"].includes(status);
  await sql`UPDATE jobs SET status = ${status}::job_status, attempt = 1, started_at = now() - interval '2 minutes',
    finished_at = ${terminal ? sql`now()` : sql`NULL`}, deadline_at = ${inFlight ? sql`now() - interval '1 minute'` : sql`NULL`},
    dispatch_epoch = ${abandoned}, updated_at = now() - interval '1 hour'
    WHERE id = ${id}`;
  return id;
}

const state = async (id: string) => (await sql<{ status: JobStatus; updated_at: Date }[]>`SELECT status, updated_at FROM all_jobs WHERE id = ${id}`)[0]!;

const claimed = (id: string): ClaimedJob => ({
  id, shard_id: SHARD, user_id: USER, kind: "log", message: "m", target: null, attempt: 1, max_attempts: 3,
  execute_at: new Date(), due_at: new Date(), last_error: null, trace_context: null, deadline_at: new Date(),
});

const apply: Record<TransitionName, (id: string) => Promise<unknown>> = {
  mark: (id) => t.mark(sql, 60_000, 1_000, [{ shard: SHARD, epoch, ids: [id] }]),
  revert: (id) => t.revert(sql, SHARD, abandoned, [id]),
  takeBack: () => t.takeBack(sql, SHARD, epoch, abandoned),
  claim: (id) => t.claim(sql, [{ id, shard: SHARD, attempt: 2 }], 10_000, 5_000),
  record: (id) => t.record(sql, [{ job: claimed(id), decision: { kind: "succeeded" }, result: { ok: true }, durationMs: 1 }]),
  rescue: () => t.rescue(sql, SHARD, epoch, null, () => 0),
  cancel: (id) => t.cancel(sql, USER, BigInt(id)),
  retry: (id) => t.retry(sql, SHARD, USER, BigInt(id)),
  reschedule: (id) => t.reschedule(sql, SHARD, USER, BigInt(id), new Date(Date.now() + 60_000)),
};

describe("each transition changes a row exactly when its status is in the transition's from-list", () => {
  for (const name of Object.keys(TRANSITIONS) as TransitionName[]) {
    test(name, async () => {
      const { from, to } = TRANSITIONS[name];
      const changed: JobStatus[] = [];
      for (const status of JOB_STATUSES) {
        // takeBack and rescue work on the whole shard: one row at a time, the others finished.
        await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE status::text NOT IN ('succeeded', 'failed', 'cancelled')`;
        const id = await jobIn(status);
        const before = await state(id);
        await apply[name](id);
        const after = await state(id);
        if (after.updated_at.getTime() !== before.updated_at.getTime()) {
          changed.push(status);
          expect(to as readonly JobStatus[]).toContain(after.status);
        } else expect(after.status).toBe(status);
      }
      expect(changed).toEqual(JOB_STATUSES.filter((s) => (from as readonly JobStatus[]).includes(s)));
    });
  }
});

test("every status is reachable and only succeeded and cancelled are final", () => {
  const reached = new Set<JobStatus>(["created", ...Object.values(TRANSITIONS).flatMap((tr) => [...tr.to])]);
  expect([...reached].sort()).toEqual([...JOB_STATUSES].sort());
  const left = new Set<JobStatus>(Object.values(TRANSITIONS).flatMap((tr) => [...tr.from]));
  expect(JOB_STATUSES.filter((s) => !left.has(s))).toEqual(["succeeded", "cancelled"]);
});
