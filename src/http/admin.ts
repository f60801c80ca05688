/**
 * The operator's bearer token (ADMIN_TOKEN). Compared in constant time (SHA-256 of both sides,
 * so the lengths match too). Without a configured token no request is an admin's.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import { ApiError } from "./errors.ts";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** True when the Authorization header carries the admin token. */
export function isAdmin(authorization: string | undefined | null, adminToken: string | null): boolean {
  if (!adminToken || !authorization) return false;
  const m = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
  return !!m && timingSafeEqual(digest(m[1]!), digest(adminToken));
}

/** Guards every route after it: 401 `unauthorized` unless the request carries the admin token. */
export function requireAdmin(adminToken: string | null) {
  return new Elysia().onBeforeHandle({ as: "scoped" }, ({ headers, set }) => {
    if (isAdmin(headers.authorization, adminToken)) return;
    set.headers["www-authenticate"] = 'Bearer realm="fairshare-admin"';
    throw new ApiError(401, "unauthorized", adminToken ? "admin token required" : "the admin API is disabled: ADMIN_TOKEN is not configured");
  });
}
