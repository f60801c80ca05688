import { Elysia, t } from "elysia";
import { toUserView, type UserStore } from "../users/user-store.ts";
import { ApiError } from "./errors.ts";

export const UserInput = t.Object({
  username: t.String({ pattern: "^[A-Za-z0-9_.-]{3,64}$", description: "3-64 letters, digits, _ . -" }),
  password: t.String({ minLength: 8, maxLength: 256 }),
  job_weight: t.Optional(t.Number({ exclusiveMinimum: 0, maximum: 1_000_000, default: 1, description: "share of executor capacity under overload, > 0" })),
});

export function usersRoutes(users: UserStore) {
  return new Elysia({ name: "users-routes" }).post(
    "/api/v1/users",
    async ({ body, set }) => {
      const user = await users.create(body.username, body.password, body.job_weight ?? 1);
      if (!user) throw new ApiError(409, "username_taken", `username ${JSON.stringify(body.username)} is taken`);
      set.status = 201;
      return { data: toUserView(user), success: true };
    },
    { body: UserInput, detail: { summary: "Create a user", tags: ["users"] } },
  );
}
