/**
 * The executor: a member of the Kafka consumer group on the due topic. For every message it
 * runs a job-run machine (actors/job-run.machine.ts) with bounded concurrency; claims and
 * outcomes are batched into one SQL statement per database per tick. A partition's offsets are
 * committed only after every message of the batch reached a durable outcome (or was dropped as
 * a duplicate); if any fails, nothing is committed and the batch is redelivered, where the
 * guarded claim drops what already ran.
 */
import { context, SpanStatusCode, trace } from "@opentelemetry/api";
import { createActor } from "xstate";
import { jobRunLogic, type ClaimedJob, type DueMessage, type RunEvent } from "../../actors/job-run.machine.ts";
import type { Decision, RunResult } from "../../actors/outcome.ts";
import { databaseOf } from "../../actors/shard-map.ts";
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { decodeDue, type DueEntry } from "../due-message.ts";
import type { BatchContext, InMessage, KafkaBus, Publisher, Subscription } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { extractContext, tracer, tracingEnabled } from "../telemetry.ts";
import { Batcher } from "../batcher.ts";
import { runJob, type HandlerSettings } from "./handlers.ts";
import { claimMany, recordMany, type Outcome } from "./job-sql.ts";

/**
 * Bounds the runs in flight. Permits are taken for a whole chunk of a Kafka batch at once, so
 * that a chunk's messages start in the same tick and their claims (and, for fast handlers,
 * their outcomes) go out as one statement each; taking them one by one as slots freed up
 * produced a trickle of tiny statements and capped a process at ~3,000 jobs/s.
 */
class Permits {
  private waiters: { n: number; go: () => void }[] = [];
  private free: number;
  constructor(private readonly capacity: number) {
    this.free = capacity;
  }
  async acquire(n: number): Promise<void> {
    if (this.waiters.length === 0 && this.free >= n) {
      this.free -= n;
      return;
    }
    await new Promise<void>((go) => this.waiters.push({ n, go }));
  }
  /** Permits taken and not yet released: the runs in flight. */
  get inUse(): number {
    return this.capacity - this.free;
  }
  release(n: number): void {
    this.free += n;
    while (this.waiters.length > 0 && this.free >= this.waiters[0]!.n) {
      const w = this.waiters.shift()!;
      this.free -= w.n;
      w.go();
    }
  }
}

async function timed<T>(step: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    metrics.executorStep.observe((performance.now() - t0) / 1000, { step });
  }
}

export class Executor {
  private sub: Subscription | null = null;
  private publisher: Publisher | null = null;
  private readonly permits: Permits;
  private readonly chunk: number;
  private readonly claims: Batcher<number, DueMessage, ClaimedJob | null>;
  private readonly records: Batcher<number, Outcome, void>;
  private readonly handler: HandlerSettings;
  private running = false;

  constructor(
    private readonly config: Config,
    private readonly dbs: Databases,
    private readonly bus: KafkaBus,
  ) {
    this.permits = new Permits(config.executor.concurrency);
    this.chunk = Math.max(1, Math.min(500, config.executor.concurrency));
    this.claims = new Batcher((db, msgs) => timed("claim", () => claimMany(dbs.all[db]!, msgs, config.executor.defaultTimeoutMs, config.executor.runGraceMs)));
    this.records = new Batcher((db, outcomes) => timed("record", () => recordMany(dbs.all[db]!, outcomes)));
    this.handler = {
      allowPrivate: config.executor.httpAllowPrivate,
      signingSecret: config.executor.signingSecret,
      defaultTimeoutMs: config.executor.defaultTimeoutMs,
    };
  }

  ready(): boolean {
    return this.running;
  }

  private dbOf(shard: number): number {
    return databaseOf(shard, this.dbs.shardCount, this.dbs.all.length);
  }

  async start(): Promise<void> {
    this.publisher = await this.bus.publisher();
    this.sub = await this.bus.subscribe(this.config.kafka.groupId, this.config.kafka.topicDue, (msgs, ctx) => this.onBatch(msgs, ctx), {
      partitionsConcurrently: Math.max(1, Math.min(this.config.kafka.partitions, 8)),
    });
    this.running = true;
  }

  private async onBatch(messages: InMessage[], ctx: BatchContext): Promise<void> {
    const t0 = performance.now();
    const entries: DueEntry[] = [];
    for (const m of messages) {
      const decoded = decodeDue(m.value);
      if (decoded && decoded.every((e) => e.shard < this.dbs.shardCount)) entries.push(...decoded);
      else {
        // Poison message: nothing can ever process it; skip it so the partition keeps moving.
        log.error("dropping malformed due message", { partition: m.partition, offset: m.offset, value: m.value.slice(0, 200) });
        metrics.jobsProcessed.inc({ outcome: "malformed" });
      }
    }
    const runs: Promise<void>[] = [];
    for (let i = 0; i < entries.length; i += this.chunk) {
      const part = entries.slice(i, i + this.chunk);
      await this.permits.acquire(part.length);
      let left = part.length;
      for (const entry of part) {
        runs.push(
          this.runOne(entry).finally(() => {
            this.permits.release(1);
            if (--left === 0) void ctx.heartbeat().catch(() => {});
          }),
        );
      }
    }
    await Promise.all(runs);
    metrics.executorStep.observe((performance.now() - t0) / 1000, { step: "batch" });
    await timed("commit", () => ctx.commit(messages[messages.length - 1]!.offset));
  }

  private async runOne(msg: DueEntry): Promise<void> {
    // A span per run only when spans are exported (see tracingEnabled).
    const span = tracingEnabled()
      ? tracer().startSpan("job.execute", { attributes: { "job.id": msg.id, "job.shard": msg.shard, "job.attempt": msg.attempt } }, extractContext(msg.trace))
      : null;
    try {
      const run = () => this.runMachine(msg);
      const outcome = await (span ? context.with(trace.setSpan(context.active(), span), run) : run());
      span?.setAttribute("job.outcome", outcome);
      metrics.jobsProcessed.inc({ outcome });
    } catch (e) {
      span?.recordException(e as Error);
      span?.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span?.end();
    }
  }

  /**
   * Runs the job's lifecycle machine (one actor per run), doing the I/O each state names and
   * sending the result back as an event. Returns the final outcome (the decision's kind, or
   * "dropped"). An I/O error propagates: nothing is recorded, the offset is not committed.
   */
  private async runMachine(msg: DueMessage): Promise<string> {
    const backoff = { baseMs: this.config.executor.backoffBaseMs, maxMs: this.config.executor.backoffMaxMs };
    const actor = createActor(jobRunLogic, { input: { msg, backoff } }).start();
    const step = (event: RunEvent) => actor.send(event);
    for (;;) {
      const c = actor.getSnapshot().context;
      switch (c.step) {
        case "claiming": {
          const job = await this.claims.submit(this.dbOf(msg.shard), msg);
          step(job ? { type: "CLAIMED", job } : { type: "NOT_CLAIMED" });
          break;
        }
        case "running": {
          // A handler that throws is a bug or an unexpected failure: retried like a transient one.
          const result = await runJob(c.job!, this.handler).catch(
            (e): RunResult => ({ ok: false, retryable: true, error: `handler error: ${(e as Error)?.message ?? e}` }),
          );
          step({ type: "RAN", result });
          break;
        }
        case "deadLettering":
          await this.deadLetter(c.job!, (c.decision as { error: string }).error);
          step({ type: "DEAD_LETTERED" });
          break;
        case "recording":
          await this.records.submit(this.dbOf(c.job!.shard_id), { job: c.job!, decision: c.decision! });
          this.observeOutcome(c.job!, c.decision!);
          step({ type: "RECORDED" });
          break;
        case "done":
          return c.decision!.kind;
        case "dropped":
          return "dropped";
      }
    }
  }

  private observeOutcome(job: ClaimedJob, decision: Decision): void {
    if (decision.kind !== "retry") metrics.jobLatency.observe(Math.max(0, Date.now() - job.execute_at.getTime()) / 1000);
    if (decision.kind !== "succeeded") log.warn(`job ${decision.kind === "retry" ? "will retry" : "failed"}`, { job_id: job.id, shard: job.shard_id, attempt: job.attempt, error: decision.error });
  }

  private async deadLetter(job: ClaimedJob, error: string): Promise<void> {
    const record = {
      id: job.id,
      shard: job.shard_id,
      user_id: job.user_id,
      message: job.message,
      target: job.target ? { url: job.target.url, method: job.target.method } : null,
      attempts: job.attempt,
      max_attempts: job.max_attempts,
      errors: [job.last_error, error].filter((e): e is string => !!e),
      failed_at: new Date().toISOString(),
    };
    await this.publisher!.publish(this.config.kafka.topicDlq, [{ key: job.id, value: JSON.stringify(record) }]);
    metrics.jobsDeadLettered.inc({ reason: "failed" });
  }

  /** Stops fetching, lets in-flight runs finish (kafkajs waits for the batch), commits, leaves. */
  async stop(): Promise<void> {
    this.running = false;
    await this.sub?.stop();
    await this.publisher?.close();
    if (this.permits.inUse > 0) log.warn("executor stopped with runs in flight; the rescuer will re-run them", { in_flight: this.permits.inUse });
  }
}
