/**
 * The scheduler processes' demand reports (actors/cluster-share.ts), exchanged through the
 * users database: each process upserts its own row and reads the others' fresh ones in one
 * round trip, every SCHEDULER_SHARE_INTERVAL. Freshness is judged by the database's clock, so
 * the processes' clocks do not matter. The exchange is off the dispatch path: if the database
 * does not answer, the process keeps the reports it last read until they expire (by its own
 * clock, the same TTL), then orders alone; nothing waits for it.
 */
import type { DemandReport } from "../../actors/cluster-share.ts";
import type { Sql } from "../db/databases.ts";

export class DemandExchange {
  private last: { reports: DemandReport[]; at: number } | null = null;

  constructor(
    private readonly sql: Sql,
    /** A report older than this (database clock) is another process's that stopped reporting. */
    private readonly ttlMs: number,
  ) {}

  /**
   * Writes `mine` and returns the other processes' fresh reports; on failure, the last ones read
   * while they are younger than the TTL, else null (order alone).
   */
  async exchange(mine: DemandReport): Promise<{ others: DemandReport[] | null; error: unknown }> {
    try {
      const rows = await this.sql<{ member: string; rate: number; span_ms: number; user_ids: string[]; weights: number[]; queued: number[]; limited_user_ids: string[]; limited_queued: number[] }[]>`
        WITH up AS (
          INSERT INTO scheduler_demand (member, reported_at, rate, span_ms, user_ids, weights, queued, limited_user_ids, limited_queued)
          VALUES (${mine.member}, now(), ${mine.rate}, ${mine.spanMs}, ${mine.userIds}::bigint[], ${mine.weights}::real[], ${mine.queued}::real[],
            ${mine.limitedUserIds}::bigint[], ${mine.limitedQueued}::real[])
          ON CONFLICT (member) DO UPDATE SET reported_at = excluded.reported_at, rate = excluded.rate, span_ms = excluded.span_ms,
            user_ids = excluded.user_ids, weights = excluded.weights, queued = excluded.queued,
            limited_user_ids = excluded.limited_user_ids, limited_queued = excluded.limited_queued
          RETURNING 1)
        SELECT member, rate, span_ms, user_ids::text[] AS user_ids, weights, queued,
          limited_user_ids::text[] AS limited_user_ids, limited_queued FROM scheduler_demand
        WHERE member <> ${mine.member} AND reported_at > now() - ${this.ttlMs} * interval '1 millisecond'
          AND (SELECT count(*) FROM up) >= 0`;
      const reports = rows.map(
        (r): DemandReport => ({
          member: r.member,
          rate: r.rate,
          spanMs: r.span_ms,
          userIds: r.user_ids,
          weights: r.weights.map(Number),
          queued: r.queued.map(Number),
          limitedUserIds: r.limited_user_ids,
          limitedQueued: r.limited_queued.map(Number),
        }),
      );
      this.last = { reports, at: Date.now() };
      return { others: reports, error: null };
    } catch (error) {
      if (this.last && Date.now() - this.last.at < this.ttlMs) return { others: this.last.reports, error };
      this.last = null;
      return { others: null, error };
    }
  }

  /** Removes this process's row (a clean stop), so the others stop counting it at once. */
  async leave(member: string): Promise<void> {
    await this.sql`DELETE FROM scheduler_demand WHERE member = ${member}`;
  }

  /** Deletes rows of processes gone for long (a crash leaves its row behind). */
  async sweep(): Promise<void> {
    await this.sql`DELETE FROM scheduler_demand WHERE reported_at < now() - interval '10 minutes'`;
  }
}
