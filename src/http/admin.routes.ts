/**
 * /api/v1/admin: operator endpoints, authenticated by the admin token (ADMIN_TOKEN).
 * A user's weight is changed here; the schedulers read it within SCHEDULER_WEIGHT_REFRESH and
 * apply it to the user's pending jobs from their next dispatch on. A disabled user cannot log
 * in and their tokens stop within a second (their scheduled jobs still run); a deleted user's
 * tokens stop the same way and their jobs that have not started are cancelled. Tenant controls
 * (users.max_running, users.paused) are stored and shown here; the schedulers enforce them.
 */
import type { Etcd3 } from "etcd3";
import { Elysia, t } from "elysia";
import { MAX_WEIGHT, MIN_WEIGHT } from "../../actors/fair-queue.ts";
import { TUNING, type Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { ActivityReader, type Activity } from "../jobs/activity.ts";
import { toJobView, type JobStore } from "../jobs/job-store.ts";
import { readOwnership } from "../scheduler/ownership-view.ts";
import { done, JobParams, jobId, ListQuery, listOptions } from "./jobs.routes.ts";
import { MAX_RUNNING_LIMIT, ShortCache, toUserView, type UserStore } from "../users/user-store.ts";
import { log } from "../log.ts";
import { requireAdmin } from "./admin.ts";
import { ApiError, errorResponses, notFound, type ErrorCode } from "./errors.ts";

export const Weight = t.Number({
  minimum: MIN_WEIGHT,
  maximum: MAX_WEIGHT,
  description: `share of executor capacity under overload, ${MIN_WEIGHT} to ${MAX_WEIGHT}`,
  error: `must be a number from ${MIN_WEIGHT} to ${MAX_WEIGHT}`,
});
/** A whole JSON number (t.Integer would also take a numeric string such as "5"), or null. */
export const MaxRunning = t.Union(
  [t.Number({ minimum: 1, maximum: MAX_RUNNING_LIMIT, multipleOf: 1 }), t.Null()],
  {
    description: `the most of the user's jobs running at once across the cluster, 1 to ${MAX_RUNNING_LIMIT}; null: the configured default (USER_MAX_RUNNING)`,
    error: `must be a whole number from 1 to ${MAX_RUNNING_LIMIT}, or null for the default`,
  },
);
const ADMIN_STATUSES = ["failed", "created", "scheduled", "running", "retrying"] as const;
/** The longest activity window (s). */
const MAX_WINDOW_S = 3_600;
const USER_ID = "^[1-9][0-9]{0,17}$";
export const UserParams = t.Object({ user_id: t.String({ pattern: USER_ID, description: "a user id" }) });
/**
 * `etcd` null: shard ownership is not served (503), as in tests of the API alone.
 */
export function adminRoutes(users: UserStore, jobs: JobStore, dbs: Databases, config: Config, etcd: Etcd3 | null) {
  const detail = (summary: string, ...codes: ErrorCode[]) => ({ summary, tags: ["admin"], security: [{ admin: [] }], responses: errorResponses("unauthorized", "invalid_request", ...codes) });
  const reader = new ActivityReader(dbs, {
    defaultWeight: config.users.defaultWeight,
    maxUsers: TUNING.api.activityMaxUsers,
    settleMs: TUNING.api.activitySettleMs,
    keepMs: MAX_WINDOW_S * 1000 + TUNING.api.activitySettleMs,
  });
  const activity = new ShortCache<Activity>(TUNING.api.activityCacheMs, (key) => {
    const [windowMs, intervalMs] = key.split(":").map(Number) as [number, number];
    return reader.read(windowMs, intervalMs);
  }, 64);
  return new Elysia({ name: "admin-routes" })
    .use(requireAdmin(config.adminTokens))
    .get(
      "/api/v1/admin/users",
      async ({ query }) => {
        const limit = query.limit ?? 50;
        const rows = await users.list(limit + 1, query.cursor ?? null);
        const page = rows.slice(0, limit);
        return { data: page.map(toUserView), next_cursor: rows.length > limit ? page[page.length - 1]!.id : null, success: true };
      },
      {
        query: t.Object({
          limit: ListQuery.properties.limit,
          cursor: t.Optional(t.String({ pattern: USER_ID, description: "next_cursor of the previous page" })),
        }),
        detail: detail("Users in id order (cursor pagination)"),
      },
    )
    .get(
      "/api/v1/admin/activity",
      async ({ query }) => {
        const windowMs = (query.window_seconds ?? 300) * 1000;
        const intervalMs = (query.interval_seconds ?? 10) * 1000;
        if (windowMs / intervalMs > 360) {
          throw new ApiError(400, "invalid_request", "at most 360 intervals per window", [{ path: "/interval_seconds", message: "too small for this window: at most 360 intervals" }]);
        }
        return { data: await activity.get(`${windowMs}:${intervalMs}`), success: true };
      },
      {
        query: t.Object({
          window_seconds: t.Optional(t.Integer({ minimum: 10, maximum: MAX_WINDOW_S, description: "how far back, default 300", error: `must be a whole number of seconds from 10 to ${MAX_WINDOW_S}` })),
          interval_seconds: t.Optional(t.Integer({ minimum: 1, maximum: 600, description: "the width of each interval, default 10", error: "must be a whole number of seconds from 1 to 600" })),
        }),
        detail: detail(
          "Recent starts per user and interval against their weights, each user's share of executor time per interval (occupancy: summed handler run time), start lateness p50/p99 per interval, and who waits now (attempts count once ended; answers are shared for a second)",
        ),
      },
    )
    .get(
      "/api/v1/admin/shards",
      async () => {
        if (!etcd) throw new ApiError(503, "unavailable", "shard ownership is not available: this API process has no etcd client");
        try {
          return { data: await readOwnership(etcd, config.etcd.prefix, dbs), success: true };
        } catch (e) {
          if (e instanceof ApiError) throw e;
          log.warn("shard ownership: etcd or a database did not answer", { err: e as Error });
          throw new ApiError(503, "unavailable", "etcd or a database did not answer; shard ownership is unknown right now");
        }
      },
      { detail: detail("Which scheduler owns which shard (etcd), with its fence epoch (SQL)") },
    )
    .post(
      "/api/v1/admin/jobs/:job_id/retry",
      async ({ params }) => {
        const id = jobId(params.job_id);
        const job = await jobs.getAny(id);
        if (!job) throw notFound();
        return done(await jobs.retry(job.user_id, id), "job_not_retryable", "is not failed (or has used 100 attempts) and cannot be retried");
      },
      { params: JobParams, detail: detail("Retry any user's failed (dead-lettered) job", "invalid_job_id", "not_found", "job_not_retryable") },
    )
    .get(
      "/api/v1/admin/users/:user_id",
      async ({ params }) => {
        const user = await users.byId(params.user_id);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      { params: UserParams, detail: detail("Get a user", "not_found") },
    )
    .patch(
      "/api/v1/admin/users/:user_id",
      async ({ params, body }) => {
        const user = await users.update(params.user_id, body);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      {
        params: UserParams,
        body: t.Object(
          {
            job_weight: t.Optional(Weight),
            disabled: t.Optional(t.Boolean({ description: "true: no login, tokens refused within a second" })),
            max_running: t.Optional(MaxRunning),
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        detail: detail("Change a user's weight or max_running, or disable or enable the user", "malformed_body", "not_found"),
      },
    )
    .post(
      "/api/v1/admin/users/:user_id/pause",
      async ({ params }) => {
        const user = await users.setPaused(params.user_id, true);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      { params: UserParams, detail: detail("Pause a user: none of their due jobs is dispatched until resumed (idempotent)", "not_found") },
    )
    .post(
      "/api/v1/admin/users/:user_id/resume",
      async ({ params }) => {
        const user = await users.setPaused(params.user_id, false);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      { params: UserParams, detail: detail("Resume a paused user: their due jobs are dispatched again (idempotent)", "not_found") },
    )
    .get(
      "/api/v1/admin/jobs",
      async ({ query }) => {
        const page = await jobs.listAll({ ...listOptions({ ...query, status: query.status }), userId: query.user_id ?? null });
        return { data: page.jobs.map(toJobView), next_cursor: page.nextCursor, success: true };
      },
      {
        query: t.Object({
          // Statuses that are indexed across users: the dead letters and the unfinished jobs.
          status: t.Union(ADMIN_STATUSES.map((st) => t.Literal(st)), { description: "failed: the dead-lettered jobs" }),
          user_id: t.Optional(UserParams.properties.user_id),
          limit: ListQuery.properties.limit,
          cursor: ListQuery.properties.cursor,
        }),
        detail: detail("Every user's jobs in one status, newest first (status=failed: the dead-letter queue)", "invalid_cursor"),
      },
    )
    .delete(
      "/api/v1/admin/users/:user_id",
      async ({ params }) => {
        if (!(await users.delete(params.user_id))) throw notFound("user");
        const cancelled = await jobs.cancelAllWaiting(params.user_id);
        return { data: { id: Number(params.user_id), deleted: true, jobs_cancelled: cancelled }, success: true };
      },
      { params: UserParams, detail: detail("Delete a user: tokens stop within a second, jobs not yet started are cancelled", "not_found") },
    );
}
