/**
 * The due topic's wire format, shared by the scheduler (encode) and the executor (decode).
 *
 * A message carries up to MAX_JOBS_PER_MESSAGE jobs: {"jobs": [{id, shard, user_id, weight, attempt,
 * due_at, epoch, trace, host}]}, where `attempt` is the number of the run it asks for, `due_at` when
 * that run was due, `trace` the job's W3C trace context and `host` its HTTP target's host (absent
 * for other kinds). Jobs travel together because producing with kafkajs costs about
 * 50 µs of CPU per message (20,900 messages/s at most here) while consuming is cheap: at the
 * seed's peak most messages still hold one job (jobs leave at their own execute_at), but a burst
 * of due jobs leaves in a few hundred messages instead of tens of thousands. A bare entry (not
 * wrapped in `jobs`) is accepted too.
 */
import type { OutMessage } from "./kafka.ts";

export interface DueEntry {
  id: string;
  shard: number;
  user_id: string;
  /** The user's weight when dispatched: the executors share their slots by it (absent: 1). */
  weight?: number;
  attempt: number;
  due_at: string;
  epoch: string;
  trace?: Record<string, string>;
  /** Its HTTP target's host (actors/target-limits.ts, hostOf): the executors apply its limits before the claim. */
  host?: string;
}

export const MAX_JOBS_PER_MESSAGE = 100;

/** Messages for the entries, each saying how many jobs it carries and whose. */
export function encodeDue(entries: DueEntry[]): (OutMessage & { jobs: number; users: string[] })[] {
  const out: (OutMessage & { jobs: number; users: string[] })[] = [];
  for (let i = 0; i < entries.length; i += MAX_JOBS_PER_MESSAGE) {
    const jobs = entries.slice(i, i + MAX_JOBS_PER_MESSAGE);
    out.push({ key: jobs[0]!.id, value: JSON.stringify({ jobs }), jobs: jobs.length, users: jobs.map((j) => j.user_id) });
  }
  return out;
}

function validEntry(e: any): e is DueEntry {
  return (
    typeof e?.id === "string" && /^\d{1,19}$/.test(e.id) &&
    Number.isInteger(e.shard) && e.shard >= 0 &&
    Number.isInteger(e.attempt) && e.attempt >= 1 &&
    (e.host === undefined || typeof e.host === "string")
  );
}

/** The entries of a message, or null when it is malformed (a poison message). */
export function decodeDue(value: string): DueEntry[] | null {
  try {
    const v = JSON.parse(value);
    const entries: unknown[] = Array.isArray(v?.jobs) ? v.jobs : [v];
    return entries.length > 0 && entries.every(validEntry) ? (entries as DueEntry[]) : null;
  } catch {
    return null;
  }
}
