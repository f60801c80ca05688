import { Elysia, t } from "elysia";
import type { Config } from "../config.ts";
import { toUserView, type UserStore } from "../users/user-store.ts";
import { requireUser, tokens } from "./auth.ts";
import { clientAddress, type TrustedProxies } from "./client-address.ts";
import { ApiError, errorResponses } from "./errors.ts";
import type { LoginThrottle } from "./limits.ts";

export function authRoutes(users: UserStore, logins: LoginThrottle, proxies: TrustedProxies, jwt: Config["jwt"]) {
  const login = new Elysia({ name: "login-routes" }).use(tokens(jwt)).post(
    "/api/v1/auth/login",
    async ({ body, issueToken, request, server }) => {
      const address = clientAddress(server?.requestIP(request)?.address, request.headers.get("x-forwarded-for"), proxies);
      logins.check(body.username, address);
      const user = await users.authenticate(body.username, body.password);
      if (!user) {
        logins.failed(body.username, address);
        throw new ApiError(401, "invalid_credentials", "wrong username or password");
      }
      if (user.disabled) throw new ApiError(403, "user_disabled", "this user is disabled; ask an operator");
      logins.succeeded(body.username, address);
      return { data: { ...(await issueToken(user)), user: toUserView(user) }, success: true };
    },
    {
      body: t.Object({ username: t.String({ minLength: 1, maxLength: 64 }), password: t.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false }),
      detail: { summary: "Log in; returns a bearer token", tags: ["auth"], responses: errorResponses("invalid_request", "malformed_body", "invalid_credentials", "user_disabled", "too_many_attempts") },
    },
  );
  const refresh = new Elysia({ name: "refresh-routes" }).use(tokens(jwt)).use(requireUser(jwt, (id) => users.active(id))).post(
    "/api/v1/auth/refresh",
    async ({ userId, issueToken }) => {
      const user = await users.byId(userId);
      if (!user) throw new ApiError(401, "unauthorized", "the token's user no longer exists");
      return { data: await issueToken(user), success: true };
    },
    { detail: { summary: "Exchange a valid token for a fresh one", tags: ["auth"], security: [{ bearer: [] }], responses: errorResponses("unauthorized") } },
  );
  return new Elysia({ name: "auth-routes" }).use(login).use(refresh);
}
