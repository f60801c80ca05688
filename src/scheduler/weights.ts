/**
 * Users' weights for the scheduler's fair order, read from the users table (the first
 * database): a weight is the user's, not a copy frozen into each job, so an operator's change
 * applies to that user's pending jobs within one refresh. Users not seen in any load for
 * FORGET_AFTER_MS are dropped, so the refresh reads only users with work.
 */
import type { Sql } from "../db/databases.ts";
import { log } from "../log.ts";

const FORGET_AFTER_MS = 10 * 60_000;

export class WeightBook {
  private known = new Map<string, { weight: number; seenAt: number }>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly users: Sql,
    private readonly defaultWeight: number,
    private readonly apply: (userId: string, weight: number) => void,
  ) {}

  /** Makes sure the users' weights are known (reads the unknown ones) before their jobs queue. */
  async seen(userIds: string[]): Promise<void> {
    const now = Date.now();
    const unknown: string[] = [];
    for (const u of userIds) {
      const k = this.known.get(u);
      if (k) k.seenAt = now;
      else unknown.push(u);
    }
    if (unknown.length > 0) await this.read(unknown, now);
  }

  start(refreshMs: number): void {
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const [u, k] of this.known) if (now - k.seenAt > FORGET_AFTER_MS) this.known.delete(u);
      if (this.known.size > 0) void this.read([...this.known.keys()], null).catch((err) => log.warn("weight refresh failed; keeping the last weights", { err: err as Error }));
    }, refreshMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async read(userIds: string[], seenAt: number | null): Promise<void> {
    const rows = await this.users<{ id: string; job_weight: number }[]>`
      SELECT id::text, job_weight FROM users WHERE id = ANY(${userIds}::bigint[])`;
    const found = new Map(rows.map((r) => [r.id, r.job_weight]));
    for (const u of userIds) {
      // A user that no longer exists keeps the default weight until its jobs are gone.
      const weight = found.get(u) ?? this.defaultWeight;
      const k = this.known.get(u);
      if (k?.weight !== weight) this.apply(u, weight);
      if (k) k.weight = weight;
      else this.known.set(u, { weight, seenAt: seenAt ?? Date.now() });
    }
  }
}
