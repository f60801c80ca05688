/**
 * Per-target limits (src/users/target-limits.ts): a user's own, under /api/v1/me/targets, and
 * the operator's (user_id 0: every user's calls to the host), under /api/v1/admin/targets. A
 * limit on a host bounds the calls to every URL whose `new URL(url).hostname` is that host,
 * whatever the port. The API stores and shows them; the executors enforce them.
 */
import { Elysia, t } from "elysia";
import type { Config } from "../config.ts";
import type { Sql } from "../db/databases.ts";
import {
  HOST_MAX_LENGTH,
  HOST_RULE,
  listOperatorTargetLimits,
  listTargetLimits,
  normalizeHost,
  OPERATOR,
  putTargetLimit,
  MAX_TARGET_LIMITS,
  removeTargetLimit,
  TARGET_LIMIT_MAX,
} from "../users/target-limits.ts";
import type { UserStore } from "../users/user-store.ts";
import { requireAdmin } from "./admin.ts";
import { UserParams } from "./admin.routes.ts";
import { requireUser } from "./auth.ts";
import { ApiError, bodyProblems, errorResponses, notFound, type ErrorCode } from "./errors.ts";

const SEMANTICS =
  `A limit on a host bounds the calls to every target URL whose hostname (new URL(url).hostname) is that host, whatever its port or scheme: ` +
  `at most max_concurrent at once and max_per_second in any one-second window, across all executors. ` +
  `A job waiting for a limit is not a failure and uses no attempt; it holds no executor slot while it waits.`;

/** A bound: a whole JSON number (t.Integer would also take a numeric string), or null for off. */
const Bound = (what: string) =>
  t.Optional(
    t.Union([t.Number({ minimum: 1, maximum: TARGET_LIMIT_MAX, multipleOf: 1 }), t.Null()], {
      description: `${what}, 1 to ${TARGET_LIMIT_MAX}; null or absent: no such bound (at least one of the two must be set)`,
      error: `must be a whole number from 1 to ${TARGET_LIMIT_MAX}, or null for no bound`,
    }),
  );

export const TargetLimitBody = t.Object(
  {
    max_concurrent: Bound("the most calls to the host at once"),
    max_per_second: Bound("the most calls to the host started in any one-second window"),
  },
  { additionalProperties: false },
);

export const HostParams = t.Object({
  host: t.String({
    minLength: 1,
    maxLength: HOST_MAX_LENGTH,
    description: "a host as a URL carries it (e.g. api.example.com, 192.0.2.1, [2001:db8::1]), URL-encoded; stored lower case, in punycode, without a port",
    error: HOST_RULE,
  }),
});

/** The normalized host of the path, or 400 `invalid_request` naming /host. */
function hostOf(raw: string): string {
  const host = normalizeHost(raw);
  if (host === null) throw new ApiError(400, "invalid_request", "invalid path parameters", [{ path: "/host", message: HOST_RULE }]);
  return host;
}

/** The bounds of a PUT body (absent: null); 400 when the body could not be used or sets neither. */
function boundsOf(body: typeof TargetLimitBody.static, request: Request) {
  const problem = bodyProblems.get(request);
  if (problem) throw problem;
  const limit = { max_concurrent: body.max_concurrent ?? null, max_per_second: body.max_per_second ?? null };
  if (limit.max_concurrent === null && limit.max_per_second === null) {
    const message = "set max_concurrent or max_per_second (or both) to a whole number; to remove the limit, DELETE it";
    throw new ApiError(400, "invalid_request", "invalid request body", [
      { path: "/max_concurrent", message },
      { path: "/max_per_second", message },
    ]);
  }
  return limit;
}

const deleted = (set: { status?: number | string }) => {
  set.status = 204;
  return undefined;
};

/** /api/v1/me/targets: the token's user's own limits (and, to read, the operator's). */
export function meTargetRoutes(users: UserStore, sql: Sql, config: Config) {
  const detail = (summary: string, ...codes: ErrorCode[]) => ({
    summary,
    description: SEMANTICS,
    tags: ["users"],
    security: [{ bearer: [] }],
    responses: errorResponses("unauthorized", ...codes),
  });
  return new Elysia({ name: "me-target-routes" })
    .use(requireUser(config.jwt, (id) => users.active(id)))
    .get(
      "/api/v1/me/targets",
      async ({ userId }) => {
        const [targets, operator] = await Promise.all([listTargetLimits(sql, userId), listOperatorTargetLimits(sql)]);
        return { data: { targets, operator }, success: true };
      },
      { detail: detail("Your per-target limits by host, and the operator's (`operator`), which bind your calls too") },
    )
    .put(
      "/api/v1/me/targets/:host",
      async ({ userId, params, body, request }) => {
        const host = hostOf(params.host);
        const limit = await putTargetLimit(sql, userId, host, boundsOf(body, request));
        if (!limit) throw new ApiError(409, "too_many_target_limits", `at most ${MAX_TARGET_LIMITS} target limits per user; delete one first`);
        return { data: limit, success: true };
      },
      {
        params: HostParams,
        body: TargetLimitBody,
        detail: detail("Set your limit on calls to a host (replacing any earlier one): max_concurrent at once, max_per_second", "invalid_request", "malformed_body", "too_many_target_limits"),
      },
    )
    .delete(
      "/api/v1/me/targets/:host",
      async ({ userId, params, set }) => {
        if (!(await removeTargetLimit(sql, userId, hostOf(params.host)))) throw notFound("target limit");
        return deleted(set);
      },
      {
        params: HostParams,
        detail: { ...detail("Remove your limit on calls to a host", "invalid_request", "not_found"), responses: { "204": { description: "removed" }, ...errorResponses("unauthorized", "invalid_request", "not_found") } },
      },
    );
}

/** /api/v1/admin/targets: the operator's limits (user_id 0), binding every user's calls. */
export function adminTargetRoutes(users: UserStore, sql: Sql, config: Config) {
  const detail = (summary: string, ...codes: ErrorCode[]) => ({
    summary,
    description: SEMANTICS,
    tags: ["admin"],
    security: [{ admin: [] }],
    responses: errorResponses("unauthorized", "invalid_request", ...codes),
  });
  return new Elysia({ name: "admin-target-routes" })
    .use(requireAdmin(config.adminTokens))
    .get(
      "/api/v1/admin/targets",
      async () => ({ data: { targets: await listOperatorTargetLimits(sql) }, success: true }),
      { detail: detail("The operator's per-target limits by host: each binds every user's calls to its host") },
    )
    .put(
      "/api/v1/admin/targets/:host",
      async ({ params, body, request }) => {
        const host = hostOf(params.host);
        return { data: (await putTargetLimit(sql, OPERATOR, host, boundsOf(body, request)))!, success: true };
      },
      {
        params: HostParams,
        body: TargetLimitBody,
        detail: detail("Set the limit on every user's calls to a host (replacing any earlier one): max_concurrent at once, max_per_second", "malformed_body"),
      },
    )
    .delete(
      "/api/v1/admin/targets/:host",
      async ({ params, set }) => {
        if (!(await removeTargetLimit(sql, OPERATOR, hostOf(params.host)))) throw notFound("target limit");
        return deleted(set);
      },
      {
        params: HostParams,
        detail: { ...detail("Remove the operator's limit on calls to a host", "not_found"), responses: { "204": { description: "removed" }, ...errorResponses("unauthorized", "invalid_request", "not_found") } },
      },
    )
    .get(
      "/api/v1/admin/users/:user_id/targets",
      async ({ params }) => {
        const [user, targets] = await Promise.all([users.byId(params.user_id), listTargetLimits(sql, params.user_id)]);
        if (!user) throw notFound("user");
        return { data: { targets }, success: true };
      },
      {
        params: UserParams,
        detail: detail("A user's own per-target limits by host (the operator's, which bind them too, are at /api/v1/admin/targets)", "not_found"),
      },
    );
}
