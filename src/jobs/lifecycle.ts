/**
 * A job's statuses and the groups its guarded transitions are written against, in one place:
 *
 *   created ─mark─▶ scheduled ─claim─▶ running ─record─▶ succeeded | retrying | failed
 *      ▲               │                  │                          │
 *      └───────────────┴──(revert, take back, rescue)───▶ created/retrying ◀─┘ (retry from failed)
 *   scheduled ─refuse early (a claim before due_at by the database's clock)─▶ created/retrying
 *   scheduled ─defer (its target's limit is full: actors/target-limits.ts)─▶ created/retrying
 *   created | retrying | scheduled ─cancel─▶ cancelled
 *
 * The SQL fragments are literal text, never parameters: the partial indexes' predicates name
 * these lists (sql/), and the planner only uses an index whose predicate it can prove from the
 * query's text. Each transition below is one function in src/jobs/transitions.ts (refuseEarly is
 * the claim's statement too, for a row not yet due), whose SQL guard is written from this
 * table's `from` list (test/transitions.test.ts checks each against a row in every status).
 */
export const JOB_STATUSES = ["created", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** Waiting for its (next) run: what the scheduler loads and marks. */
export const WAITING = ["created", "retrying"] as const satisfies readonly JobStatus[];
/** Dispatched or running: carries a rescue deadline. */
export const IN_FLIGHT = ["scheduled", "running"] as const satisfies readonly JobStatus[];
/** Not started, so a user may still cancel it. */
export const CANCELLABLE = [...WAITING, "scheduled"] as const satisfies readonly JobStatus[];

/** `('a', 'b')` for an SQL IN list. */
export const inList = (statuses: readonly JobStatus[]): string => `(${statuses.map((s) => `'${s}'`).join(", ")})`;

/** Back to waiting: a job that has run before is retrying, one that never ran is created again. */
export const BACK_TO_WAITING = "CASE WHEN attempt = 0 THEN 'created'::job_status ELSE 'retrying'::job_status END";

/** Every allowed status change: who makes it, from which statuses, to which. */
export const TRANSITIONS = {
  /** Scheduler: a waiting job is dispatched (fenced by the shard's epoch). */
  mark: { from: WAITING, to: ["scheduled"] },
  /** Scheduler: its message could not be published. */
  revert: { from: ["scheduled"], to: WAITING },
  /** Scheduler: a new owner takes back what a dead owner marked and nobody claimed. */
  takeBack: { from: ["scheduled"], to: WAITING },
  /** Executor: the run starts (attempt + 1), only for the attempt its message names, once due by the database's clock. */
  claim: { from: ["scheduled"], to: ["running"] },
  /** Executor: a message came before its job was due by the database's clock; back to waiting, due_at kept (the claim's statement). */
  refuseEarly: { from: ["scheduled"], to: WAITING },
  /** Executor: a dispatched job waits for a target limit; back to waiting unrun, attempt unchanged, due later. */
  defer: { from: ["scheduled"], to: WAITING },
  /** Executor: the run's outcome. */
  record: { from: ["running"], to: ["succeeded", "retrying", "failed"] },
  /** Scheduler's rescuer: an in-flight job's deadline passed. */
  rescue: { from: IN_FLIGHT, to: ["created", "retrying", "failed"] },
  /** API: the user cancels a job that has not started (or the user is deleted). */
  cancel: { from: CANCELLABLE, to: ["cancelled"] },
  /** API: the user retries a failed job. */
  retry: { from: ["failed"], to: ["retrying"] },
  /** API: the user moves a waiting job's execute_at. */
  reschedule: { from: WAITING, to: WAITING },
} as const satisfies Record<string, { from: readonly JobStatus[]; to: readonly JobStatus[] }>;

export type TransitionName = keyof typeof TRANSITIONS;

/** The SQL guard of a transition: `IN (...)` over its from-statuses. */
export const from = (t: TransitionName): string => inList(TRANSITIONS[t].from);
