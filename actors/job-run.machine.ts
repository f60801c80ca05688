/**
 * One run of one job, from its Kafka message to a durable outcome. A pure state machine: it
 * holds no I/O. The executor (src/executor/executor.ts) runs one XState actor of it per job,
 * does the I/O each state names and sends the result back as an event:
 *
 *   claiming ──CLAIMED──▶ running ──RAN (succeeded/retry)──▶ recording ──RECORDED──▶ done
 *      │                        └────RAN (failed)──▶ deadLettering ──DEAD_LETTERED──▶ recording
 *      └──NOT_CLAIMED (duplicate, stale or cancelled)──▶ dropped
 *
 * An event a state does not name changes nothing; `done` and `dropped` are final.
 *
 * Written as XState transition logic (`fromTransition`: one pure function from state and event
 * to the next state) rather than a `createMachine` statechart: it runs once per job, and the
 * statechart interpreter's cost per run was most of the executor's CPU (docs/capacity.md, "Executor").
 * This machine has no hierarchy, history or timers, which is what a statechart would buy; the
 * shard actor, which has timers and invoked I/O and steps per batch, stays a statechart.
 * test/unit/job-run-machine.test.ts holds this function to the statechart it replaced, for
 * every sequence of up to five events.
 *
 * Invariants:
 * - the handler runs only after a successful guarded claim (scheduled -> running, attempt + 1),
 *   so a duplicate message or a cancelled job never runs;
 * - the outcome is recorded with a guard on (id, attempt, status running): a run the rescuer
 *   already gave up on cannot overwrite the newer state;
 * - a failed job's dead-letter record is published before its row says `failed`, so no failed
 *   job lacks its record (a crash in between re-runs it and may publish the record twice);
 * - the machine reaches `done` only when the outcome is durable, and only then may the consumer
 *   commit the message's offset. An I/O error stops the stepping (no commit, redelivery).
 */
import { fromTransition } from "xstate";
import type { BackoffPolicy } from "./backoff.ts";
import { decide, failsForGood, type Decision, type RunResult } from "./outcome.ts";

/** What the machine needs of its job (src/jobs/job-row.ts ClaimedJob in the executor). */
export interface RunJob {
  /** The number of this run (1 for the first). */
  attempt: number;
  max_attempts: number;
}

/** The run's state: the step it is in and what it has learnt so far. */
export interface RunState<J extends RunJob = RunJob> {
  step: RunStep;
  backoff: BackoffPolicy;
  job: J | null;
  result: RunResult | null;
  decision: Decision | null;
}

export type RunEvent<J extends RunJob = RunJob> =
  | { type: "CLAIMED"; job: J }
  | { type: "NOT_CLAIMED" }
  | { type: "RAN"; result: RunResult }
  | { type: "DEAD_LETTERED" }
  | { type: "RECORDED" };

/** The run's states. In each non-final one the executor does the I/O it names and answers with an event. */
export type RunStep = "claiming" | "running" | "deadLettering" | "recording" | "done" | "dropped";

export function initialRun<J extends RunJob>(input: { backoff: BackoffPolicy }): RunState<J> {
  return { step: "claiming", backoff: input.backoff, job: null, result: null, decision: null };
}

/** The transition function: the next state after `event`; the same state when the event does not apply. */
export function runTransition<J extends RunJob>(state: RunState<J>, event: RunEvent<J>): RunState<J> {
  switch (state.step) {
    case "claiming":
      if (event.type === "CLAIMED") return { ...state, step: "running", job: event.job };
      if (event.type === "NOT_CLAIMED") return { ...state, step: "dropped" };
      return state;
    case "running": {
      if (event.type !== "RAN") return state;
      // The decision is taken on the RAN transition itself.
      const { attempt, max_attempts } = state.job!;
      const decision = decide(event.result, attempt, max_attempts, state.backoff);
      return { ...state, step: failsForGood(event.result, attempt, max_attempts) ? "deadLettering" : "recording", result: event.result, decision };
    }
    case "deadLettering":
      return event.type === "DEAD_LETTERED" ? { ...state, step: "recording" } : state;
    case "recording":
      return event.type === "RECORDED" ? { ...state, step: "done" } : state;
    case "done":
    case "dropped":
      return state;
  }
}

/** XState actor logic of one run: `createActor(jobRunLogic, { input })`, then `send` the I/O results. */
export const jobRunLogic = <J extends RunJob>() =>
  fromTransition((state: RunState<J>, event: RunEvent<J>) => runTransition(state, event), ({ input }: { input: { backoff: BackoffPolicy } }) => initialRun<J>(input));
