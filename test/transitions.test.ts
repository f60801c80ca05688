/**
 * Every guarded transition against a row in every status, on the real database: a transition
 * changes a row exactly when the row's status is in its `from` list (src/jobs/lifecycle.ts),
 * so the table is what the SQL does, not a comment about it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { DUE_CHANNEL, parseDuePayload } from "../src/db/due-notify.ts";
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
  // The same claim, of a row not yet due by the database's clock.
  refuseEarly: async (id) => {
    await sql`UPDATE jobs SET due_at = now() + interval '5 seconds' WHERE id = ${id}`;
    return t.claim(sql, [{ id, shard: SHARD, attempt: 2 }], 10_000, 5_000);
  },
  defer: (id) => t.defer(sql, [{ id, shard: SHARD, attempt: 2, delayMs: 5_000 }]),
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

describe("the database's clock decides when a job may start", () => {
  type Row = { status: JobStatus; attempt: number; due_at: Date; deadline_at: Date | null; started_at: Date | null; updated_at: Date };
  const row = async (id: string) =>
    (await sql<Row[]>`SELECT status, attempt, due_at, deadline_at, started_at, updated_at FROM all_jobs WHERE id = ${id}`)[0]!;

  /** A job marked `scheduled` under the abandoned epoch, on attempt `attempt`, due `dueIn` from the database's now() (whole ms). */
  async function scheduled(dueIn: string, attempt = 0): Promise<string> {
    const id = String(nextId++);
    await sql`INSERT INTO jobs (id, shard_id, user_id, message, status, execute_at, due_at, attempt, max_attempts, dispatch_epoch, deadline_at, updated_at)
      VALUES (${id}, ${SHARD}, ${USER}, 'm', 'scheduled', now(), date_trunc('milliseconds', now() + ${dueIn}::interval), ${attempt}, 3, ${abandoned},
        now() + interval '1 minute', now() - interval '1 hour')`;
    return id;
  }

  test("a claim before due_at refuses the run: back to waiting, due_at kept, the shard's owner notified of it; a due row is claimed", async () => {
    await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE status::text NOT IN ('succeeded', 'failed', 'cancelled')`;
    const fresh = await scheduled("5 seconds");
    const again = await scheduled("5 seconds", 1);
    const due = await scheduled("-1 second");
    const before = { fresh: await row(fresh), again: await row(again), due: await row(due) };
    const payloads: string[] = [];
    const listening = await sql.listen(DUE_CHANNEL, (p) => payloads.push(p));
    try {
      const got = await t.claim(
        sql,
        [fresh, again, due, fresh].map((id) => ({ id, shard: SHARD, attempt: id === again ? 2 : 1 })),
        10_000,
        5_000,
      );
      // The second copy of a refused message claims nothing, as for any duplicate.
      expect(got.map((g) => (g === null || g === t.REFUSED_EARLY ? g : g.id))).toEqual([t.REFUSED_EARLY, t.REFUSED_EARLY, due, null]);

      for (const [id, status] of [[fresh, "created"], [again, "retrying"]] as const) {
        const after = await row(id);
        const was = before[id === fresh ? "fresh" : "again"];
        expect(after.status).toBe(status);
        expect(after.attempt).toBe(was.attempt);
        expect(after.due_at.getTime()).toBe(was.due_at.getTime());
        expect(after.deadline_at).toBeNull();
        expect(after.started_at).toBeNull();
      }
      const ran = await row(due);
      expect(ran.status).toBe("running");
      expect(ran.attempt).toBe(1);
      expect(ran.started_at!.getTime()).toBeGreaterThanOrEqual(before.due.due_at.getTime());
      expect(ran.deadline_at).not.toBeNull();

      // One notification: the shard's earliest refused due time.
      for (let i = 0; i < 100 && payloads.length === 0; i++) await Bun.sleep(20);
      expect(payloads.flatMap(parseDuePayload)).toEqual([{ shard: SHARD, at: before.fresh.due_at.getTime() }]);
    } finally {
      await listening.unlisten();
    }
  });

  test("a deferred job waits again unrun: its attempt kept, due delayMs from the database's now() (never earlier), its shard's owner notified", async () => {
    await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE status::text NOT IN ('succeeded', 'failed', 'cancelled')`;
    const due = await scheduled("-1 second", 1);
    const later = await scheduled("1 hour");
    const payloads: string[] = [];
    const listening = await sql.listen(DUE_CHANNEL, (p) => payloads.push(p));
    try {
      const now = (await sql<{ now: Date }[]>`SELECT now()`)[0]!.now;
      const got = await t.defer(sql, [
        { id: due, shard: SHARD, attempt: 2, delayMs: 3_000 },
        { id: later, shard: SHARD, attempt: 1, delayMs: 3_000 },
        { id: due, shard: SHARD, attempt: 1, delayMs: 3_000 }, // a stale message: not its attempt
      ]);
      expect(got).toEqual([true, true, false]);
      const [a, b] = [await row(due), await row(later)];
      expect([a.status, b.status]).toEqual(["retrying", "created"]);
      expect([a.attempt, b.attempt]).toEqual([1, 0]);
      expect(a.due_at.getTime()).toBeGreaterThanOrEqual(now.getTime() + 3_000);
      expect(a.due_at.getTime()).toBeLessThan(now.getTime() + 13_000);
      expect(b.due_at.getTime()).toBeGreaterThan(now.getTime() + 3_000_000);
      expect([a.deadline_at, a.started_at]).toEqual([null, null]);
      for (let i = 0; i < 100 && payloads.length === 0; i++) await Bun.sleep(20);
      // The payload's milliseconds are rounded, the row's (microseconds) read truncated.
      const [payload] = payloads.flatMap(parseDuePayload);
      expect(payload!.shard).toBe(SHARD);
      expect(Math.abs(payload!.at - a.due_at.getTime())).toBeLessThanOrEqual(1);
    } finally {
      await listening.unlisten();
    }
  });

  for (const name of ["revert", "takeBack"] as const) {
    test(`${name} keeps a future due_at and makes a past one now()`, async () => {
      await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE status::text NOT IN ('succeeded', 'failed', 'cancelled')`;
      const later = await scheduled("5 seconds");
      const past = await scheduled("-5 seconds");
      const dueLater = (await row(later)).due_at.getTime();
      if (name === "revert") await t.revert(sql, SHARD, abandoned, [later, past]);
      else expect(await t.takeBack(sql, SHARD, epoch, abandoned)).toBe(2);
      const [a, b] = [await row(later), await row(past)];
      expect([a.status, b.status]).toEqual(["created", "created"]);
      expect(a.due_at.getTime()).toBe(dueLater);
      // now() of the statement, which also set updated_at.
      expect(b.due_at.getTime()).toBe(b.updated_at.getTime());
    });
  }
});

test("a lost executor's runs go back at once, within their deadlines: due now, the attempt recorded as lost with its reason; another executor's runs stay", async () => {
  await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE status::text NOT IN ('succeeded', 'failed', 'cancelled')`;
  const ids = [String(nextId++), String(nextId++), String(nextId++)];
  for (const id of ids) {
    await sql`INSERT INTO jobs (id, shard_id, user_id, message, status, execute_at, due_at, attempt, max_attempts, dispatch_epoch, deadline_at, updated_at)
      VALUES (${id}, ${SHARD}, ${USER}, 'm', 'scheduled', now(), now() - interval '1 second', 0, 3, ${epoch}, now() + interval '1 minute', now())`;
  }
  const [mine, theirs, alsoMine] = ids as [string, string, string];
  await t.claim(sql, [mine, alsoMine].map((id) => ({ id, shard: SHARD, attempt: 1 })), 30_000, 10_000, "executor-dead");
  await t.claim(sql, [{ id: theirs, shard: SHARD, attempt: 1 }], 30_000, 10_000, "executor-alive");
  const far = new Date("9999-12-31T00:00:00Z");
  const r = await t.rescue(sql, SHARD, epoch, far, () => 60_000, ["executor-dead"]);
  expect(r.changed).toBe(2);
  const rows = await sql<{ id: string; status: string; due_late: boolean; claimed_by: string | null; last_error: string | null }[]>`
    SELECT id::text, status::text, due_at > now() + interval '1 second' AS due_late, claimed_by, last_error FROM jobs WHERE id = ANY(${ids}::bigint[]) ORDER BY id`;
  const by = new Map(rows.map((x) => [x.id, x]));
  for (const id of [mine, alsoMine]) {
    expect(by.get(id)).toMatchObject({ status: "retrying", due_late: false, claimed_by: null, last_error: t.EXECUTOR_LOST_ERROR });
  }
  expect(by.get(theirs)).toMatchObject({ status: "running", claimed_by: "executor-alive" });
  const attempts = await sql<{ job_id: string; outcome: string; error_class: string }[]>`
    SELECT job_id::text, outcome, error_class FROM job_attempts WHERE job_id = ANY(${ids}::bigint[]) ORDER BY job_id`;
  expect(attempts.map((a) => [a.job_id, a.outcome, a.error_class])).toEqual([[mine, "lost", "executor_lost"], [alsoMine, "lost", "executor_lost"]].sort());
  // Without lost executors the same rescue touches nothing within its deadline.
  expect((await t.rescue(sql, SHARD, epoch, far, () => 60_000)).changed).toBe(0);
});
