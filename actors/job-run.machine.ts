/**
 * One run of one job, from its Kafka message to a durable outcome.
 *
 *   claiming ──claimed──▶ running ──▶ deciding ──succeeded/retry──▶ recording ──▶ done
 *      │                                 └──failed──▶ deadLettering ──▶ recording
 *      └──not claimed (duplicate, stale or cancelled)──▶ dropped
 *
 * Invariants:
 * - the handler runs only after a successful guarded claim (scheduled -> running, attempt + 1),
 *   so a duplicate message or a cancelled job never runs;
 * - the outcome is recorded with a guard on (id, attempt, status running): a run the rescuer
 *   already gave up on cannot overwrite the newer state;
 * - a failed job's dead-letter record is published before its row says `failed`, so no failed
 *   job lacks its record (a crash in between re-runs it and may publish the record twice);
 * - the machine reaches a final state only when the outcome is durable, and only then may the
 *   consumer commit the message's offset. I/O errors fail the machine (no commit, redelivery).
 */
import { assign, fromPromise, setup } from "xstate";
import type { BackoffPolicy } from "./backoff.ts";
import { decide, type Decision, type RunResult } from "./outcome.ts";

export interface DueMessage {
  id: string;
  shard: number;
  attempt: number;
}

export interface ClaimedJob {
  id: string;
  shard_id: number;
  user_id: string;
  message: string;
  target: { url: string; method: string; headers: Record<string, string>; timeout_ms: number | null } | null;
  attempt: number;
  max_attempts: number;
  execute_at: Date;
  last_error: string | null;
  trace_context: Record<string, string> | null;
}

interface RunContext {
  msg: DueMessage;
  backoff: BackoffPolicy;
  job: ClaimedJob | null;
  result: RunResult | null;
  decision: Decision | null;
}

export const jobRunMachine = setup({
  types: {
    context: {} as RunContext,
    input: {} as { msg: DueMessage; backoff: BackoffPolicy },
    output: {} as { outcome: "dropped" | Decision["kind"] },
  },
  actors: {
    claim: fromPromise<ClaimedJob | null, DueMessage>(async () => {
      throw new Error("claim not provided");
    }),
    run: fromPromise<RunResult, ClaimedJob>(async () => {
      throw new Error("run not provided");
    }),
    deadLetter: fromPromise<void, { job: ClaimedJob; error: string }>(async () => {
      throw new Error("deadLetter not provided");
    }),
    record: fromPromise<void, { job: ClaimedJob; decision: Decision }>(async () => {
      throw new Error("record not provided");
    }),
  },
}).createMachine({
  id: "jobRun",
  context: ({ input }) => ({ msg: input.msg, backoff: input.backoff, job: null, result: null, decision: null }),
  initial: "claiming",
  states: {
    claiming: {
      invoke: {
        src: "claim",
        input: ({ context }) => context.msg,
        onDone: [
          { guard: ({ event }) => event.output === null, target: "dropped" },
          { target: "running", actions: assign({ job: ({ event }) => event.output }) },
        ],
      },
    },
    running: {
      invoke: {
        src: "run",
        input: ({ context }) => context.job!,
        onDone: { target: "deciding", actions: assign({ result: ({ event }) => event.output }) },
        // A handler that throws is a bug or an unexpected failure: retry it like a transient one.
        onError: {
          target: "deciding",
          actions: assign({ result: ({ event }) => ({ ok: false, retryable: true, error: `handler error: ${(event.error as Error)?.message ?? event.error}` }) }),
        },
      },
    },
    deciding: {
      entry: assign({ decision: ({ context }) => decide(context.result!, context.job!.attempt, context.job!.max_attempts, context.backoff) }),
      always: [{ guard: ({ context }) => context.decision!.kind === "failed", target: "deadLettering" }, { target: "recording" }],
    },
    deadLettering: {
      invoke: {
        src: "deadLetter",
        input: ({ context }) => ({ job: context.job!, error: (context.decision as { error: string }).error }),
        onDone: "recording",
      },
    },
    recording: {
      invoke: {
        src: "record",
        input: ({ context }) => ({ job: context.job!, decision: context.decision! }),
        onDone: "done",
      },
    },
    done: { type: "final" },
    dropped: { type: "final" },
  },
  output: ({ context }) => ({ outcome: context.decision?.kind ?? "dropped" }),
});
