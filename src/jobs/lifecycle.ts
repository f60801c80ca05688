/**
 * A job's statuses and the groups its guarded transitions are written against, in one place:
 *
 *   created ─mark─▶ scheduled ─claim─▶ running ─record─▶ succeeded | retrying | failed
 *      ▲               │                  │                          │
 *      └───────────────┴──(revert, take back, rescue)───▶ created/retrying ◀─┘ (retry from failed)
 *   created | retrying | scheduled ─cancel─▶ cancelled
 *
 * The SQL fragments are literal text, never parameters: the partial indexes' predicates name
 * these lists (sql/), and the planner only uses an index whose predicate it can prove from the
 * query's text. Each guarded transition is one statement: the API's in src/jobs/job-store.ts,
 * the scheduler's and rescuer's in src/scheduler/scheduler-sql.ts, the executor's in
 * src/executor/job-sql.ts.
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
