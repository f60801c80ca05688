/**
 * /api/v1/me/jobs: a user's own jobs. Another user's job answers 404 for every operation
 * (indistinguishable from a missing one), because every query filters on the token's user.
 */
import { Elysia, t } from "elysia";
import { parseId } from "../ids.ts";
import { TUNING, type Config } from "../config.ts";
import { BatchNotCommitted } from "../jobs/batches.ts";
import { checkJob, JOB_KINDS, PRIORITIES, parseExecuteAt, parseTimestamp, type JobInput, type JobSpec, type Problem } from "../jobs/job-input.ts";
import { JOB_STATUSES, requestHash, toAttemptView, toJobView, type JobStatus, type JobStore, type ListOptions, type TransitionResult } from "../jobs/job-store.ts";
import { metrics } from "../metrics.ts";
import { dbSpanOptions, inSpan, injectContext, traced } from "../telemetry.ts";
import type { UserStore } from "../users/user-store.ts";
import { requireUser } from "./auth.ts";
import { ApiError, errorResponses, notFound, type ErrorCode } from "./errors.ts";
import type { CreateQuota } from "./limits.ts";
import { inRequestSpan } from "./observe.ts";

const Target = t.Object({
  url: t.String({ minLength: 1, maxLength: 2048, description: "http(s) URL the executor calls with the message as body", error: "must be an http(s) URL of at most 2048 characters" }),
  method: t.Optional(t.Union(["GET", "POST", "PUT", "PATCH", "DELETE"].map((m) => t.Literal(m)), { description: "default POST" })),
  headers: t.Optional(t.Record(t.String(), t.String({ maxLength: 4096 }))),
  timeout_ms: t.Optional(t.Integer({ minimum: 100, maximum: 300_000, error: "must be a whole number of milliseconds from 100 to 300000" })),
}, { additionalProperties: false });

export const JobBody = t.Object({
  kind: t.Optional(t.Union(JOB_KINDS.map((k) => t.Literal(k)), { description: "log: the message is the work; http: sent to target (default: http with a target, log without)" })),
  message: t.String({ minLength: 1, maxLength: 65_536, error: "must be 1 to 65536 characters" }),
  execute_at: t.String({ minLength: 1, maxLength: 64, description: "ISO-8601 with offset; past = now", error: "must be an ISO-8601 date-time with an offset, e.g. 2030-01-02T03:04:05Z" }),
  max_attempts: t.Optional(t.Integer({ minimum: 1, maximum: 100, error: "must be a whole number from 1 to 100" })),
  target: t.Optional(t.Nullable(Target)),
  // A union of literals, not t.UnionEnum: that one gives the field a default (its first value,
  // "high") that Elysia writes into every body without it, and publishes in /docs/json.
  priority: t.Optional(t.Union(PRIORITIES.map((p) => t.Literal(p)), {
    description: "which of your due jobs goes first: high, normal or low (default normal); fair share still decides between users",
    error: `must be one of ${PRIORITIES.join(", ")}`,
  })),
}, { additionalProperties: false });

export const JobParams = t.Object({ job_id: t.String({ maxLength: 40 }) });

const STATUS_LIST = `^(${JOB_STATUSES.join("|")})(,(${JOB_STATUSES.join("|")}))*$`;

/** The list filters (every one optional; no defaults but the page size). */
export const ListQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 1000, description: "page size, default 50", error: "must be a whole number from 1 to 1000" })),
  cursor: t.Optional(t.String({ maxLength: 40, description: "next_cursor of the previous page" })),
  status: t.Optional(t.String({ pattern: STATUS_LIST, description: `one or more of ${JOB_STATUSES.join(", ")}, comma-separated (default: every status)` })),
  execute_after: t.Optional(t.String({ maxLength: 64, description: "only jobs with execute_at at or after this ISO-8601 time" })),
  execute_before: t.Optional(t.String({ maxLength: 64, description: "only jobs with execute_at before this ISO-8601 time" })),
});

/** The list filters as the store takes them; 400 for a bad cursor or time. */
export function listOptions(query: typeof ListQuery.static): ListOptions {
  const cursor = query.cursor === undefined ? null : parseId(query.cursor);
  if (query.cursor !== undefined && cursor === null) throw new ApiError(400, "invalid_cursor", "cursor must be a job id from next_cursor");
  const time = (name: "execute_after" | "execute_before") => {
    const raw = query[name];
    if (raw === undefined) return null;
    const at = parseTimestamp(raw);
    if (!at) invalid([{ path: `/${name}`, message: "must be an ISO-8601 date-time with an offset" }]);
    return at;
  };
  return {
    limit: query.limit ?? 50,
    cursor,
    statuses: query.status ? ([...new Set(query.status.split(","))] as JobStatus[]) : null,
    executeAfter: time("execute_after"),
    executeBefore: time("execute_before"),
  };
}

export function jobId(raw: string): bigint {
  const id = parseId(raw);
  if (id === null) throw new ApiError(400, "invalid_job_id", "job_id must be a positive 64-bit integer");
  return id;
}

/** The Idempotency-Key header, checked: 1-255 visible ASCII characters. */
function idempotencyKey(key: string | undefined): string | undefined {
  if (key !== undefined && !/^[\x21-\x7e]{1,255}$/.test(key)) throw new ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters");
  return key;
}

function invalid(problems: Problem[]): never {
  throw new ApiError(400, "invalid_request", "invalid request body", problems);
}

export function jobsRoutes(jobs: JobStore, users: UserStore, quota: CreateQuota, config: Config) {
  const limits = { jobHorizonMs: config.api.jobHorizonMs, defaultMaxAttempts: config.api.defaultMaxAttempts };

  const specsOf = (inputs: JobInput[], prefix: (i: number) => string): JobSpec[] => {
    const now = Date.now();
    const problems: Problem[] = [];
    const specs = inputs.map((input, i) => {
      const r = checkJob(input, now, limits, prefix(i));
      problems.push(...r.problems);
      return r.spec!;
    });
    if (problems.length) invalid(problems.slice(0, 50));
    return specs;
  };

  return new Elysia({ name: "jobs-routes" })
    .use(requireUser(config.jwt, (id) => users.active(id)))
    .get(
      "/api/v1/me/jobs",
      async ({ userId, query }) => {
        const page = await jobs.list(userId, listOptions(query));
        return { data: page.jobs.map(toJobView), next_cursor: page.nextCursor, success: true };
      },
      { query: ListQuery, detail: { summary: "List your jobs, newest first (cursor pagination)", tags: ["jobs"], security: [{ bearer: [] }], responses: errorResponses("unauthorized", "invalid_request", "invalid_cursor") } },
    )
    .get(
      "/api/v1/me/jobs/stats",
      async ({ userId }) => ({ data: await jobs.stats(userId), success: true }),
      { detail: { summary: "How many of your jobs are in each status", tags: ["jobs"], security: [{ bearer: [] }], responses: errorResponses("unauthorized") } },
    )
    .post(
      "/api/v1/me/jobs",
      async ({ userId, body, headers, request, set }) => {
        const key = idempotencyKey(headers["idempotency-key"]);
        const [spec] = specsOf([body], () => "");
        await quota.admit(userId, 1);
        return inRequestSpan(request, () =>
          inSpan("job.create", { "user.id": userId }, async (span) => {
            const tc = injectContext();
            const result = await traced("INSERT jobs", dbSpanOptions("INSERT", "jobs"), () => jobs.create({ userId }, spec!, tc, key ? { key, requestHash: requestHash(body) } : undefined));
            if ("conflict" in result) {
              throw new ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body");
            }
            span.setAttributes({ "job.id": result.job.id, "job.shard": result.job.shard_id });
            if (result.replayed) {
              set.headers["idempotent-replayed"] = "true";
            } else {
              quota.created(userId, 1);
              metrics.jobsCreated.inc();
              set.status = 201;
            }
            return { data: toJobView(result.job), success: true };
          }),
        );
      },
      {
        body: JobBody,
        headers: t.Object({ "idempotency-key": t.Optional(t.String()) }),
        detail: {
          summary: "Schedule a job",
          tags: ["jobs"],
          security: [{ bearer: [] }],
          responses: errorResponses("unauthorized", "invalid_request", "malformed_body", "payload_too_large", "invalid_idempotency_key", "idempotency_key_reused", "quota_exceeded", "rate_limited"),
        },
      },
    )
    .post(
      "/api/v1/me/jobs/batch",
      async ({ userId, body, headers, request, set }) => {
        const started = Date.now();
        const key = idempotencyKey(headers["idempotency-key"]);
        const specs = specsOf(body.jobs, (i) => `/jobs/${i}`);
        await quota.admit(userId, specs.length);
        return inRequestSpan(request, () =>
          inSpan("job.create_batch", { "user.id": userId, "job.count": specs.length }, async () => {
            const tc = injectContext();
            // The batch is committed only while its answer can still be given (API_REQUEST_TIMEOUT).
            const decideBy = started + config.api.requestTimeoutMs - Math.min(TUNING.api.batchDecideMarginMs, config.api.requestTimeoutMs / 4);
            const result = await traced("INSERT jobs", dbSpanOptions("INSERT", "jobs"), () =>
              jobs.createMany({ userId }, specs, tc, { decideBy, idem: key ? { key, requestHash: requestHash(body) } : undefined }),
            ).catch((err) => {
              if (err instanceof BatchNotCommitted) throw new ApiError(503, "unavailable", "the batch was not created (a database did not answer in time): none of its jobs exists; retry after a second", undefined, 1);
              throw err;
            });
            if ("conflict" in result) throw new ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body");
            if (result.replayed) set.headers["idempotent-replayed"] = "true";
            else {
              quota.created(userId, result.jobs.length);
              metrics.jobsCreated.inc({}, result.jobs.length);
              set.status = 201;
            }
            return { data: result.jobs.map(toJobView), success: true };
          }),
        );
      },
      {
        body: t.Object({ jobs: t.Array(JobBody, { minItems: 1, maxItems: config.api.batchMax }) }, { additionalProperties: false }),
        headers: t.Object({ "idempotency-key": t.Optional(t.String()) }),
        detail: {
          summary: `Schedule up to ${config.api.batchMax} jobs, all or none`,
          description:
            "The batch is created whole or not at all, across every database: 201 means every job exists, any error means none does. " +
            "With an Idempotency-Key, a repeat of the same body returns the first request's jobs (200, Idempotent-Replayed: true) and never creates them twice; " +
            "a repeat after an error or a timeout creates the batch if the first did not. A different body under the same key is 422.",
          tags: ["jobs"],
          security: [{ bearer: [] }],
          responses: errorResponses("unauthorized", "invalid_request", "malformed_body", "payload_too_large", "invalid_idempotency_key", "idempotency_key_reused", "quota_exceeded", "rate_limited", "unavailable"),
        },
      },
    )
    .get(
      "/api/v1/me/jobs/:job_id/attempts",
      async ({ userId, params }) => {
        const attempts = await jobs.attempts(userId, jobId(params.job_id));
        if (!attempts) throw notFound();
        return { data: attempts.map(toAttemptView), success: true };
      },
      {
        params: JobParams,
        detail: {
          summary: "The job's attempts, first to last: times, outcome, error class and message, HTTP status, duration",
          tags: ["jobs"],
          security: [{ bearer: [] }],
          responses: errorResponses("unauthorized", "invalid_job_id", "not_found"),
        },
      },
    )
    .get(
      "/api/v1/me/jobs/:job_id",
      async ({ userId, params }) => {
        const job = await jobs.get(userId, jobId(params.job_id));
        if (!job) throw notFound();
        return { data: toJobView(job), success: true };
      },
      { params: JobParams, detail: { summary: "Get one of your jobs", tags: ["jobs"], security: [{ bearer: [] }], responses: errorResponses("unauthorized", "invalid_job_id", "not_found") } },
    )
    .post(
      "/api/v1/me/jobs/:job_id/cancel",
      async ({ userId, params }) => done(await jobs.cancel(userId, jobId(params.job_id)), "job_not_cancellable", "can no longer be cancelled"),
      {
        params: JobParams,
        detail: { summary: "Cancel a job that has not started", tags: ["jobs"], security: [{ bearer: [] }], responses: errorResponses("unauthorized", "invalid_job_id", "not_found", "job_not_cancellable") },
      },
    )
    .post(
      "/api/v1/me/jobs/:job_id/retry",
      async ({ userId, params }) => done(await jobs.retry(userId, jobId(params.job_id)), "job_not_retryable", "is not failed (or has used 100 attempts) and cannot be retried"),
      {
        params: JobParams,
        detail: {
          summary: "Retry a failed (dead-lettered) job: due now, with as many more attempts as it was created with; its attempts stay in its history",
          tags: ["jobs"],
          security: [{ bearer: [] }],
          responses: errorResponses("unauthorized", "invalid_job_id", "not_found", "job_not_retryable"),
        },
      },
    )
    .patch(
      "/api/v1/me/jobs/:job_id",
      async ({ userId, params, body }) => {
        const id = jobId(params.job_id);
        const at = parseExecuteAt(body.execute_at, Date.now(), limits.jobHorizonMs, "/execute_at");
        if ("problem" in at) invalid([at.problem]);
        return done(await jobs.reschedule(userId, id, at.date), "job_not_reschedulable", "has started or finished and can no longer be rescheduled");
      },
      {
        params: JobParams,
        body: t.Object({ execute_at: JobBody.properties.execute_at }, { additionalProperties: false }),
        detail: {
          summary: "Reschedule a job that has not started (created or retrying)",
          tags: ["jobs"],
          security: [{ bearer: [] }],
          responses: errorResponses("unauthorized", "invalid_request", "malformed_body", "invalid_job_id", "not_found", "job_not_reschedulable"),
        },
      },
    );
}

/** The answer to a guarded transition: the job, 404, or 409 with its current status. */
export function done(r: TransitionResult, conflictCode: ErrorCode, conflict: string) {
  if (r.kind === "not_found") throw notFound();
  if (r.kind === "conflict") throw new ApiError(409, conflictCode, `the job is ${r.status} and ${conflict}`, { status: r.status });
  return { data: toJobView(r.job), success: true };
}
