import { describe, expect, test } from "bun:test";
import { assign, createActor, initialTransition, setup, transition } from "xstate";
import { initialRun, jobRunLogic, runTransition, type RunEvent, type RunJob, type RunStep } from "../../actors/job-run.machine.ts";
import { classifyHttpStatus, decide, failsForGood, type Decision } from "../../actors/outcome.ts";

const backoff = { baseMs: 1_000, maxMs: 60_000 };
const job = (attempt: number, max = 3): RunJob => ({ attempt, max_attempts: max });

function run(events: RunEvent[]) {
  let snap = initialRun({ backoff });
  const path: RunStep[] = [snap.step];
  for (const e of events) {
    snap = runTransition(snap, e);
    path.push(snap.step);
  }
  return { snap, path };
}

describe("job-run machine", () => {
  test("claimed, ran ok, recorded: done with succeeded", () => {
    const { snap, path } = run([{ type: "CLAIMED", job: job(2) }, { type: "RAN", result: { ok: true } }, { type: "RECORDED" }]);
    expect(path).toEqual(["claiming", "running", "recording", "done"]);
    expect(snap.decision).toEqual({ kind: "succeeded" });
  });

  test("not claimed (duplicate, stale, cancelled): dropped, and the handler never runs", () => {
    const { snap, path } = run([{ type: "NOT_CLAIMED" }, { type: "RAN", result: { ok: true } }]);
    expect(path).toEqual(["claiming", "dropped", "dropped"]);
    expect(snap.result).toBeNull();
  });

  test("a retryable failure with attempts left is recorded as a retry with backoff", () => {
    const { snap, path } = run([{ type: "CLAIMED", job: job(2) }, { type: "RAN", result: { ok: false, retryable: true, error: "HTTP 503", errorClass: "http_status", httpStatus: 503 } }]);
    expect(path).toEqual(["claiming", "running", "recording"]);
    const d = snap.decision!;
    expect(d.kind).toBe("retry");
    if (d.kind === "retry") expect(d.delayMs).toBeWithin(1_000, 2_001); // attempt 2: nominal 2 s, equal jitter
  });

  test("exhausted or permanent failures are dead-lettered before they are recorded", () => {
    for (const [j, result] of [
      [job(3), { ok: false as const, retryable: true, error: "timed out", errorClass: "timeout" as const }],
      [job(1), { ok: false as const, retryable: false, error: "HTTP 404", errorClass: "http_status" as const }],
    ] as const) {
      const { snap, path } = run([{ type: "CLAIMED", job: j }, { type: "RAN", result }, { type: "RECORDED" }]);
      expect(path).toEqual(["claiming", "running", "deadLettering", "deadLettering"]); // RECORDED is not accepted yet
      const after = runTransition(snap, { type: "DEAD_LETTERED" });
      expect(after.step).toBe("recording");
      const done = runTransition(after, { type: "RECORDED" });
      expect(done.step).toBe("done");
      expect(done.decision!.kind).toBe("failed");
    }
  });

  test("events out of order change nothing", () => {
    const { path } = run([{ type: "RECORDED" }, { type: "RAN", result: { ok: true } }, { type: "CLAIMED", job: job(1) }]);
    expect(path).toEqual(["claiming", "claiming", "claiming", "running"]);
  });

  test("final states accept nothing, and a state's own events are the only ones it takes", () => {
    const all: RunEvent[] = [{ type: "CLAIMED", job: job(1) }, { type: "NOT_CLAIMED" }, { type: "RAN", result: { ok: true } }, { type: "DEAD_LETTERED" }, { type: "RECORDED" }];
    const accepts: Record<RunStep, string[]> = {
      claiming: ["CLAIMED", "NOT_CLAIMED"], running: ["RAN"], deadLettering: ["DEAD_LETTERED"], recording: ["RECORDED"], done: [], dropped: [],
    };
    for (const step of Object.keys(accepts) as RunStep[]) {
      const state = { ...initialRun({ backoff }), step, job: job(1) };
      for (const e of all) {
        const next = runTransition(state, e);
        expect(next === state).toBe(!accepts[step].includes(e.type));
      }
    }
  });
});

describe("outcomes", () => {
  test("HTTP status classes", () => {
    expect(classifyHttpStatus(204)).toEqual({ ok: true, httpStatus: 204 });
    expect(classifyHttpStatus(503)).toEqual({ ok: false, retryable: true, error: "HTTP 503", errorClass: "http_status", httpStatus: 503 });
    expect(classifyHttpStatus(429)).toMatchObject({ ok: false, retryable: true });
    expect(classifyHttpStatus(503)).toMatchObject({ ok: false, retryable: true });
    expect(classifyHttpStatus(404)).toMatchObject({ ok: false, retryable: false });
    expect(classifyHttpStatus(302)).toMatchObject({ ok: false, retryable: false });
  });
  test("decide: retry while attempts remain, then fail", () => {
    const err = { ok: false as const, retryable: true, error: "x", errorClass: "handler" as const };
    expect(decide(err, 1, 3, backoff, () => 0).kind).toBe("retry");
    expect(decide(err, 3, 3, backoff, () => 0)).toEqual({ kind: "failed", error: "x (attempts exhausted: 3/3)" });
    expect(decide({ ok: false, retryable: false, error: "bad", errorClass: "handler" }, 1, 3, backoff)).toEqual({ kind: "failed", error: "bad" });
    expect(decide({ ok: true }, 1, 1, backoff)).toEqual({ kind: "succeeded" });
  });
});

test("an XState actor of the logic, driven by events as the executor does, ends done", () => {
  const actor = createActor(jobRunLogic<RunJob>(), { input: { backoff } }).start();
  actor.send({ type: "CLAIMED", job: job(1) });
  actor.send({ type: "RAN", result: { ok: false, retryable: false, error: "HTTP 400", errorClass: "http_status" } });
  expect(actor.getSnapshot().context.step).toBe("deadLettering");
  actor.send({ type: "DEAD_LETTERED" });
  actor.send({ type: "RECORDED" });
  expect(actor.getSnapshot().context).toMatchObject({ step: "done", decision: { kind: "failed", error: "HTTP 400" } });
});

/**
 * The lifecycle as an XState statechart, as it was declared before the executor switched to the
 * transition function (see actors/job-run.machine.ts for why). Kept here as the model the
 * transition function must follow, event sequence by event sequence.
 */
const lifecycleChart = setup({
  types: { context: {} as { job: RunJob | null; decisionKind: Decision["kind"] | null }, events: {} as RunEvent },
}).createMachine({
  context: { job: null, decisionKind: null },
  initial: "claiming",
  states: {
    claiming: { on: { CLAIMED: { target: "running", actions: assign({ job: ({ event }) => event.job }) }, NOT_CLAIMED: "dropped" } },
    running: {
      on: {
        RAN: [
          { guard: ({ context, event }) => failsForGood(event.result, context.job!.attempt, context.job!.max_attempts), target: "deadLettering", actions: assign({ decisionKind: "failed" }) },
          { target: "recording", actions: assign({ decisionKind: ({ event }) => (event.result.ok ? ("succeeded" as const) : ("retry" as const)) }) },
        ],
      },
    },
    deadLettering: { on: { DEAD_LETTERED: "recording" } },
    recording: { on: { RECORDED: "done" } },
    done: { type: "final" },
    dropped: { type: "final" },
  },
});

test("the transition function follows the lifecycle statechart for every sequence of up to 5 events", () => {
  const events: RunEvent[] = [
    { type: "CLAIMED", job: job(1) },
    { type: "CLAIMED", job: job(3) },
    { type: "NOT_CLAIMED" },
    { type: "RAN", result: { ok: true } },
    { type: "RAN", result: { ok: false, retryable: true, error: "HTTP 503", errorClass: "http_status", httpStatus: 503 } },
    { type: "RAN", result: { ok: false, retryable: false, error: "HTTP 404", errorClass: "http_status" } },
    { type: "DEAD_LETTERED" },
    { type: "RECORDED" },
  ];
  let sequences = 0;
  const walk = (chart: ReturnType<typeof initialTransition<typeof lifecycleChart>>[0], state: ReturnType<typeof initialRun>, depth: number) => {
    expect(state.step).toBe(chart.value as RunStep);
    expect(state.decision?.kind ?? null).toBe(chart.context.decisionKind);
    expect(state.job).toBe(chart.context.job);
    sequences++;
    if (depth === 5) return;
    for (const e of events) walk(transition(lifecycleChart, chart, e)[0], runTransition(state, e), depth + 1);
  };
  walk(initialTransition(lifecycleChart)[0], initialRun({ backoff }), 0);
  expect(sequences).toBe((8 ** 6 - 1) / 7);
});
