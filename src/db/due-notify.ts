/**
 * "A job became waiting": whoever makes jobs waiting (the API creating them, an executor
 * recording a retry) notifies the shard owners on the database's `fairshare_due` channel, in the
 * same statement, so the notification is delivered exactly when the rows commit. The payload
 * says, per shard, the earliest due time: `shard:ms,shard:ms,...`, or `*:ms` (every shard) when
 * that would not fit in a notification. A lost notification (a listener reconnecting) costs at
 * most SCHEDULER_POLL_INTERVAL: the shard actors still poll at that pace.
 */
export const DUE_CHANNEL = "fairshare_due";

/** PostgreSQL refuses payloads of 8,000 bytes or more. */
export const MAX_PAYLOAD = 7_000;

export function duePayload(jobs: Iterable<{ shard: number; dueAt: number }>): string {
  const earliest = new Map<number, number>();
  let min = Infinity;
  for (const j of jobs) {
    earliest.set(j.shard, Math.min(earliest.get(j.shard) ?? Infinity, j.dueAt));
    min = Math.min(min, j.dueAt);
  }
  const payload = [...earliest].map(([s, t]) => `${s}:${Math.round(t)}`).join(",");
  return payload.length <= MAX_PAYLOAD ? payload : `*:${Math.round(min)}`;
}

/** The entries of a payload; a shard of null means every shard. Malformed parts are skipped. */
export function parseDuePayload(payload: string): { shard: number | null; at: number }[] {
  const out: { shard: number | null; at: number }[] = [];
  for (const part of payload.split(",")) {
    const m = /^(\*|\d+):(\d+)$/.exec(part);
    if (m) out.push({ shard: m[1] === "*" ? null : Number(m[1]), at: Number(m[2]) });
  }
  return out;
}

/**
 * "Jobs stopped waiting": the API notifies the shard owners on `fairshare_gone` when it cancels
 * or reschedules a waiting job (in the same statement), so a scheduler takes the job out of its
 * fair order at once instead of popping a stale copy (which would cost its user a turn, or run a
 * rescheduled job at its old time). The payload is the job's id, or `u:<user id>` for every job
 * of a user. A lost notification is harmless: a stale copy is not marked (the mark checks the
 * row) and its turn is refunded.
 */
export const GONE_CHANNEL = "fairshare_gone";

export const goneUserPayload = (userId: string) => `u:${userId}`;

/** The ids and users of a payload; malformed parts are skipped. */
export function parseGonePayload(payload: string): { ids: bigint[]; users: string[] } {
  const out = { ids: [] as bigint[], users: [] as string[] };
  for (const part of payload.split(",")) {
    if (/^\d+$/.test(part)) out.ids.push(BigInt(part));
    else if (/^u:\d+$/.test(part)) out.users.push(part.slice(2));
  }
  return out;
}
