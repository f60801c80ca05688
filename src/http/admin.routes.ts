/**
 * /api/v1/admin: operator endpoints, authenticated by the admin token (ADMIN_TOKEN).
 * A user's weight is changed here; the schedulers read it within SCHEDULER_WEIGHT_REFRESH and
 * apply it to the user's pending jobs from their next dispatch on. A disabled user cannot log
 * in and their tokens stop within a second (their scheduled jobs still run); a deleted user's
 * tokens stop the same way and their jobs that have not started are cancelled.
 */
import { Elysia, t } from "elysia";
import { MAX_WEIGHT, MIN_WEIGHT } from "../../actors/fair-queue.ts";
import { toJobView, type JobStore } from "../jobs/job-store.ts";
import { ListQuery, listOptions } from "./jobs.routes.ts";
import { toUserView, type UserStore } from "../users/user-store.ts";
import { requireAdmin } from "./admin.ts";
import { errorResponses, notFound, type ErrorCode } from "./errors.ts";

export const Weight = t.Number({ minimum: MIN_WEIGHT, maximum: MAX_WEIGHT, description: `share of executor capacity under overload, ${MIN_WEIGHT} to ${MAX_WEIGHT}` });
const ADMIN_STATUSES = ["failed", "created", "scheduled", "running", "retrying"] as const;
const UserParams = t.Object({ user_id: t.String({ pattern: "^[1-9][0-9]{0,17}$", description: "a user id" }) });

export function adminRoutes(users: UserStore, jobs: JobStore, adminToken: string | null) {
  const detail = (summary: string, ...codes: ErrorCode[]) => ({ summary, tags: ["admin"], security: [{ admin: [] }], responses: errorResponses("unauthorized", "invalid_request", ...codes) });
  return new Elysia({ name: "admin-routes" })
    .use(requireAdmin(adminToken))
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
          { job_weight: t.Optional(Weight), disabled: t.Optional(t.Boolean({ description: "true: no login, tokens refused within a second" })) },
          { additionalProperties: false, minProperties: 1 },
        ),
        detail: detail("Change a user's weight, or disable or enable the user", "malformed_body", "not_found"),
      },
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
