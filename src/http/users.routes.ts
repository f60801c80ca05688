import { Elysia, t } from "elysia";
import type { Config } from "../config.ts";
import { toUserView, type User, type UserStore } from "../users/user-store.ts";
import { isAdmin } from "./admin.ts";
import { requireUser } from "./auth.ts";
import { Weight } from "./admin.routes.ts";
import { ApiError, errorResponses } from "./errors.ts";

export const UserInput = t.Object({
  username: t.String({ pattern: "^[A-Za-z0-9_.-]{3,64}$", description: "3-64 letters, digits, _ . -", error: "must be 3 to 64 characters, each a letter, a digit or one of _ . -" }),
  password: t.String({ minLength: 8, maxLength: 256, error: "must be 8 to 256 characters" }),
  job_weight: t.Optional(Weight),
}, { additionalProperties: false });

/**
 * Sign-up, and the user's signing secret. The secret (the key of X-Signature on HTTP target
 * calls, src/executor/signing.ts) is shown once, at sign-up and at each rotation.
 * Who may choose a weight is configuration (SIGNUP_WEIGHTS): `open` lets anyone pick
 * one in range; `admin` refuses any weight but the default unless the request carries the admin
 * token, so a user cannot sign up with a weight that takes the whole machine.
 */
export function usersRoutes(users: UserStore, config: Config) {
  const { defaultWeight, signupWeights } = config.users;
  const meDetail = (summary: string) => ({ summary, tags: ["users"], security: [{ bearer: [] }], responses: errorResponses("unauthorized") });
  /** The token's user, or 401 when it vanished since the token was checked. */
  const own = async (found: Promise<User | null>): Promise<User> => {
    const user = await found;
    if (!user) throw new ApiError(401, "unauthorized", "the token's user no longer exists");
    return user;
  };
  const me = new Elysia({ name: "me-routes" }).use(requireUser(config.jwt, (id) => users.active(id))).post(
    "/api/v1/me/signing-secret",
    async ({ userId }) => {
      const rotated = await users.rotateSigningSecret(userId, config.users.signingGraceMs);
      if (!rotated) throw new ApiError(401, "unauthorized", "the token's user is disabled or no longer exists");
      return { data: { signing_secret: rotated.signing_secret, previous_valid_until: rotated.previous_valid_until.toISOString() }, success: true };
    },
    {
      detail: {
        summary: "Rotate the signing secret of your HTTP target calls; the previous one stays valid for SIGNING_SECRET_GRACE",
        tags: ["users"],
        security: [{ bearer: [] }],
        responses: errorResponses("unauthorized"),
      },
    },
  ).get(
    "/api/v1/me",
    async ({ userId }) => ({ data: toUserView(await own(users.byId(userId))), success: true }),
    { detail: meDetail("Your own user: weight, max_running, whether you are paused") },
  ).post(
    "/api/v1/me/pause",
    async ({ userId }) => ({ data: toUserView(await own(users.setPaused(userId, true))), success: true }),
    { detail: meDetail("Pause yourself: none of your due jobs is dispatched until you resume (idempotent); jobs can still be created") },
  ).post(
    "/api/v1/me/resume",
    async ({ userId }) => ({ data: toUserView(await own(users.setPaused(userId, false))), success: true }),
    { detail: meDetail("Resume yourself: your due jobs are dispatched again (idempotent)") },
  );
  return new Elysia({ name: "users-routes" }).use(me).post(
    "/api/v1/users",
    async ({ body, set, headers }) => {
      const weight = body.job_weight ?? defaultWeight;
      if (weight !== defaultWeight && signupWeights === "admin" && !isAdmin(headers.authorization, config.adminTokens)) {
        throw new ApiError(403, "weight_requires_admin", `only an operator may choose a job_weight other than ${defaultWeight}; leave it out or sign up with the admin token`);
      }
      const user = await users.create(body.username, body.password, weight);
      if (!user) throw new ApiError(409, "username_taken", `username ${JSON.stringify(body.username)} is taken`);
      set.status = 201;
      return { data: { ...toUserView(user), signing_secret: user.signing_secret }, success: true };
    },
    { body: UserInput, detail: { summary: "Create a user", tags: ["users"], responses: errorResponses("invalid_request", "malformed_body", "payload_too_large", "username_taken", "weight_requires_admin") } },
  );
}
