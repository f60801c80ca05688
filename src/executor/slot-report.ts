/**
 * The executors' slot reports (sql/000013), through the users database: each executor writes
 * its row (its slots, how many are held, and per user the jobs waiting for a slot), the
 * schedulers read the fresh rows. Freshness is judged by the database's clock.
 */
import type { Sql } from "../db/databases.ts";

export interface SlotReport {
  slots: number;
  held: number;
  /** Users with jobs waiting for a slot, and how many. */
  waiting: Map<string, number>;
  /** Active users' mean run times (ms; with several executors, their mean). */
  runMs: Map<string, number>;
}

export async function writeSlotReport(sql: Sql, member: string, r: SlotReport): Promise<void> {
  await sql`
    INSERT INTO executor_slots (member, reported_at, slots, held, waiting_user_ids, waiting, run_user_ids, run_ms)
    VALUES (${member}, now(), ${r.slots}, ${r.held}, ${[...r.waiting.keys()]}::bigint[], ${[...r.waiting.values()]}::real[],
      ${[...r.runMs.keys()]}::bigint[], ${[...r.runMs.values()]}::real[])
    ON CONFLICT (member) DO UPDATE SET reported_at = excluded.reported_at, slots = excluded.slots, held = excluded.held,
      waiting_user_ids = excluded.waiting_user_ids, waiting = excluded.waiting, run_user_ids = excluded.run_user_ids, run_ms = excluded.run_ms`;
}

export async function deleteSlotReport(sql: Sql, member: string): Promise<void> {
  await sql`DELETE FROM executor_slots WHERE member = ${member}`;
}

/** The live executors' reports together: their slots, and per user its jobs waiting for one. */
export async function readSlotReports(sql: Sql, ttlMs: number): Promise<SlotReport & { executors: number }> {
  const rows = await sql<{ slots: number; held: number; waiting_user_ids: string[]; waiting: number[]; run_user_ids: string[]; run_ms: number[] }[]>`
    SELECT slots, held, waiting_user_ids::text[] AS waiting_user_ids, waiting, run_user_ids::text[] AS run_user_ids, run_ms FROM executor_slots
    WHERE reported_at > now() - ${ttlMs} * interval '1 millisecond'`;
  const out = { slots: 0, held: 0, waiting: new Map<string, number>(), runMs: new Map<string, number>(), executors: rows.length };
  const runs = new Map<string, { sum: number; n: number }>();
  for (const r of rows) {
    out.slots += r.slots;
    out.held += r.held;
    r.waiting_user_ids.forEach((u, i) => out.waiting.set(u, (out.waiting.get(u) ?? 0) + Number(r.waiting[i])));
    r.run_user_ids.forEach((u, i) => {
      const x = runs.get(u) ?? { sum: 0, n: 0 };
      x.sum += Number(r.run_ms[i]);
      x.n++;
      runs.set(u, x);
    });
  }
  for (const [u, x] of runs) out.runMs.set(u, x.sum / x.n);
  return out;
}

/**
 * Executors that stopped reporting: their last report is older than `afterMs` (and newer than
 * `forgetMs`, past which their runs are long rescued by their deadlines). An executor that stops
 * in order deletes its row; one that died leaves it.
 */
export async function lostExecutors(sql: Sql, afterMs: number, forgetMs: number): Promise<string[]> {
  const rows = await sql<{ member: string }[]>`
    SELECT member FROM executor_slots
    WHERE reported_at < now() - ${afterMs} * interval '1 millisecond' AND reported_at > now() - ${forgetMs} * interval '1 millisecond'`;
  return rows.map((r) => r.member);
}
