/**
 * The scheduler core's I/O (actors/scheduler-core.ts): loads and marks in SQL, publishes to the
 * due topic, puts back what could not be published, and runs the rescuer when a load asks for
 * it. The core decides what and when; this only does it.
 */
import { trace as otelTrace, type Span } from "@opentelemetry/api";
import type { Marked, MarkOutcome, MarkRequest } from "../../actors/dispatcher.ts";
import type { SchedulerIo } from "../../actors/scheduler-core.ts";
import type { LoadInput, LoadOutput } from "../../actors/shard.machine.ts";
import type { Placement } from "../../actors/start-window.ts";
import { TUNING, type Config } from "../config.ts";
import { retryRolledBack, type Databases } from "../db/databases.ts";
import { hostOf } from "../../actors/target-limits.ts";
import { encodeDue, type DueEntry } from "../due-message.ts";
import type { Publisher } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { dbSpanOptions, extractContext, failed, injectContext, messagingSpanOptions, tracer, tracingEnabled } from "../telemetry.ts";
import { mark, revert as revertRows, type MarkedRow } from "../jobs/transitions.ts";
import { loadDue } from "./load-due.ts";
import { rescueShard } from "./rescuer.ts";

/** A job marked `scheduled`, ready to be published. */
export interface DueRow extends Marked {
  userId: string;
  attempt: number;
  epoch: string;
  trace: Record<string, string> | null;
  /** Its HTTP target's host (the key of its target limits), if it has one. */
  host?: string;
  /** When its mark statement started and returned (ms since the epoch), for its dispatch span. */
  markStart: number;
  markEnd: number;
}

export interface DispatchIoOptions {
  /** Called with the user ids of every load, before it resolves (weights must be known). */
  usersSeen(userIds: string[]): Promise<void>;
  /** The user's weight, which the message carries for the executors' slot sharing. */
  weightOf(userId: string): number;
}

/**
 * Two producers: `bulk` carries what is dispatched as soon as the window allows (a backlog, in
 * large requests), `onTime` what was marked ahead and is published at its due time. Each has one
 * request in flight, so with a single producer a job due now waited for a backlog's request.
 */
export interface Publishers {
  bulk: Publisher;
  onTime: Publisher;
}

export function schedulerIo(config: Config, dbs: Databases, publishers: Publishers, opts: DispatchIoOptions): SchedulerIo<DueRow> {
  const s = config.scheduler;
  const { topicDue } = config.kafka;
  // A row is marked only if still due within the premark interval plus a second of clock slack.
  const aheadMs = s.premarkMs + 1_000;
  let next = 0;

  const rescue = async (shard: number, epoch: string, since: number | null): Promise<number> =>
    (await rescueShard(config, dbs.forShard(shard), publishers.bulk, shard, epoch, since === null ? null : new Date(since))).dbNow.getTime();

  return {
    async load(input: LoadInput): Promise<LoadOutput> {
      const rescuedAt = input.rescue ? await rescue(input.shard, input.epoch, input.rescueSince) : null;
      const t0 = performance.now();
      const out = { ...(await loadDue(dbs.forShard(input.shard), input)), rescuedAt };
      metrics.dispatchStep.observe({ step: "load" }, (performance.now() - t0) / 1000);
      metrics.jobsLoaded.inc(out.jobs.length);
      if (out.jobs.length > 0) await opts.usersSeen([...new Set(out.jobs.map((j) => j.userId))]);
      return out;
    },

    async mark(reqs: MarkRequest[]): Promise<MarkOutcome<DueRow>[]> {
      const t0 = performance.now();
      const markStart = Date.now();
      const byDb = new Map<number, number[]>();
      reqs.forEach((r, i) => {
        const db = dbs.indexOf(r.shard);
        const list = byDb.get(db);
        if (list) list.push(i);
        else byDb.set(db, [i]);
      });
      const out: MarkOutcome<DueRow>[] = new Array(reqs.length);
      await Promise.all(
        [...byDb].map(async ([db, idx]) => {
          const sqlReqs = idx.map((i) => ({ shard: reqs[i]!.shard, epoch: reqs[i]!.epoch, ids: reqs[i]!.jobs.map((j) => j.id.toString()) }));
          try {
            // A database that does not answer fails its marks at once (src/db/gate.ts), so the
            // other databases' jobs go on; rows its statement marked after all are put back.
            const results = await dbs.gate.within(
              db,
              TUNING.db.answerWithinMs,
              () => retryRolledBack(() => mark(dbs.all[db]!, s.scheduledDeadlineMs, aheadMs, sqlReqs)),
              (late) => {
                sqlReqs.forEach((r, k) => {
                  const ids = late[k]!.rows.map((row) => row.id.toString());
                  if (ids.length > 0) void revertRows(dbs.all[db]!, r.shard, r.epoch, ids).catch((err) => log.warn("could not put back jobs marked late; the rescuer will", { err: err as Error }));
                });
              },
            );
            const markEnd = Date.now();
            idx.forEach((i, k) => {
              const { fence, rows } = results[k]!;
              const req = reqs[i]!;
              out[i] = fence !== req.epoch ? { kind: "fenced", current: fence } : { kind: "marked", rows: rows.map((r) => dueRow(r, req.epoch, markStart, markEnd)) };
            });
          } catch (error) {
            for (const i of idx) out[i] = { kind: "failed", error };
          }
        }),
      );
      metrics.dispatchStep.observe({ step: "mark" }, (performance.now() - t0) / 1000);
      return out;
    },

    async publish(rows: DueRow[], onTime: boolean, partitions: number[]): Promise<Placement[]> {
      const t0 = performance.now();
      // With tracing on, each job's dispatch is a span in its own trace (child of the API request
      // that created it, or of the one that retried it): its mark statement, then the send to the
      // due topic, whose context the message carries to the executor.
      const spans: Span[] = [];
      const entries = rows.map((r): DueEntry => {
        let tc = r.trace ?? {};
        if (tracingEnabled()) {
          const parent = extractContext(r.trace);
          const dispatch = tracer().startSpan("job.dispatch", { startTime: r.markStart, attributes: { "job.id": r.id.toString(), "job.shard": r.shard, "job.attempt": r.attempt + 1 } }, parent);
          // Not sampled: no children, and the message carries the job's own (unsampled) context.
          if (dispatch.isRecording()) {
            const inDispatch = otelTrace.setSpan(parent, dispatch);
            tracer().startSpan("UPDATE jobs", dbSpanOptions("UPDATE", "jobs", r.markStart), inDispatch).end(r.markEnd);
            const send = tracer().startSpan(`send ${topicDue}`, messagingSpanOptions("send", topicDue, { "messaging.message.id": r.id.toString() }), inDispatch);
            tc = injectContext(otelTrace.setSpan(inDispatch, send));
            spans.push(send, dispatch);
          }
        }
        return { id: r.id.toString(), shard: r.shard, user_id: r.userId, weight: opts.weightOf(r.userId), attempt: r.attempt + 1, due_at: new Date(r.dueAt).toISOString(), epoch: r.epoch, trace: tc, ...(r.host ? { host: r.host } : {}) };
      });
      const endSpans = (e?: unknown) => {
        for (const sp of spans) {
          if (e) failed(sp, e);
          sp.end();
        }
      };
      // Messages spread over the given partitions in turn, from where the last publish left off.
      const messages = encodeDue(entries).map((m) => ({ ...m, partition: partitions[next++ % partitions.length]! }));
      let placed;
      try {
        placed = await (onTime ? publishers.onTime : publishers.bulk).publish(topicDue, messages);
      } catch (e) {
        endSpans(e);
        await revert(rows).catch((err) => log.warn("could not put unpublished jobs back to waiting; the rescuer will", { err: err as Error }));
        throw e;
      }
      endSpans();
      const publishedAt = Date.now();
      metrics.dispatchStep.observe({ step: "publish" }, (performance.now() - t0) / 1000);
      for (const r of rows) metrics.dispatchLateness.observe(Math.max(0, publishedAt - r.dueAt) / 1000);
      metrics.jobsDispatched.inc({ shard: String(rows[0]!.shard) }, rows.length);
      return placed.map((p, i) => ({ ...p, jobs: messages[i]!.jobs, users: messages[i]!.users }));
    },
  };

  async function revert(rows: DueRow[]): Promise<void> {
    const byShard = new Map<number, DueRow[]>();
    for (const r of rows) byShard.set(r.shard, [...(byShard.get(r.shard) ?? []), r]);
    await Promise.all([...byShard].map(([shard, list]) => revertRows(dbs.forShard(shard), shard, list[0]!.epoch, list.map((r) => r.id.toString()))));
  }
}

function dueRow(r: MarkedRow, epoch: string, markStart: number, markEnd: number): DueRow {
  const host = r.url ? hostOf(r.url) : undefined;
  return { id: BigInt(r.id), shard: r.shard_id, dueAt: r.due_at.getTime(), userId: r.user_id, attempt: r.attempt, epoch, trace: r.trace_context, markStart, markEnd, ...(host ? { host } : {}) };
}
