/**
 * The operator's bearer tokens (ADMIN_TOKEN, a comma-separated list: several are accepted at once
 * so that one can be replaced without a moment when no token works, docs/operations.md). Compared
 * in constant time (SHA-256 of both sides, so the lengths match too), against every configured
 * token whatever the outcome. Without a configured token no request is an admin's.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import { ApiError } from "./errors.ts";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** True when the Authorization header carries one of the admin tokens. */
export function isAdmin(authorization: string | undefined | null, adminTokens: readonly string[]): boolean {
  if (adminTokens.length === 0 || !authorization) return false;
  const m = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
  if (!m) return false;
  const presented = digest(m[1]!);
  let match = false;
  for (const token of adminTokens) match = timingSafeEqual(presented, digest(token)) || match;
  return match;
}

/** Guards every route after it: 401 `unauthorized` unless the request carries an admin token. */
export function requireAdmin(adminTokens: readonly string[]) {
  return new Elysia().onBeforeHandle({ as: "scoped" }, ({ headers, set }) => {
    if (isAdmin(headers.authorization, adminTokens)) return;
    set.headers["www-authenticate"] = 'Bearer realm="fairshare-admin"';
    throw new ApiError(401, "unauthorized", adminTokens.length > 0 ? "admin token required" : "the admin API is disabled: ADMIN_TOKEN is not configured");
  });
}
