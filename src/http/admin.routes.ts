/**
 * /api/v1/admin: operator endpoints, authenticated by the admin token (ADMIN_TOKEN).
 * A user's weight is changed here; the schedulers read it within SCHEDULER_WEIGHT_REFRESH and
 * apply it to the user's pending jobs from their next dispatch on.
 */
import { Elysia, t } from "elysia";
import { MAX_WEIGHT, MIN_WEIGHT } from "../../actors/fair-queue.ts";
import { toUserView, type UserStore } from "../users/user-store.ts";
import { requireAdmin } from "./admin.ts";
import { notFound } from "./errors.ts";

export const Weight = t.Number({ minimum: MIN_WEIGHT, maximum: MAX_WEIGHT, description: `share of executor capacity under overload, ${MIN_WEIGHT} to ${MAX_WEIGHT}` });
const UserParams = t.Object({ user_id: t.String({ pattern: "^[1-9][0-9]{0,17}$", description: "a user id" }) });

export function adminRoutes(users: UserStore, adminToken: string | null) {
  const detail = (summary: string) => ({ summary, tags: ["admin"], security: [{ admin: [] }] });
  return new Elysia({ name: "admin-routes" })
    .use(requireAdmin(adminToken))
    .get(
      "/api/v1/admin/users/:user_id",
      async ({ params }) => {
        const user = await users.byId(params.user_id);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      { params: UserParams, detail: detail("Get a user") },
    )
    .patch(
      "/api/v1/admin/users/:user_id",
      async ({ params, body }) => {
        const user = await users.setWeight(params.user_id, body.job_weight);
        if (!user) throw notFound("user");
        return { data: toUserView(user), success: true };
      },
      { params: UserParams, body: t.Object({ job_weight: Weight }, { additionalProperties: false }), detail: detail("Change a user's weight") },
    );
}
