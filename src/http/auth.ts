/**
 * Bearer-token authentication. Tokens are HS256 JWTs (via @elysiajs/jwt) carrying the user id
 * in `sub`. `requireUser` runs before body validation, so a bad token is a 401 whatever the body:
 * a body that could not be used (src/http/json-body.ts) is reported after the token is checked.
 * (The plugins are unnamed on purpose: Elysia skips a named plugin's second use, and both the
 * login and the authenticated routes need their own derive.)
 */
import { jwt } from "@elysiajs/jwt";
import { Elysia } from "elysia";
import { TUNING } from "../config.ts";
import { ApiError, bodyProblems } from "./errors.ts";

export function tokens(secret: string, ttlSeconds: number) {
  return new Elysia()
    .use(jwt({ name: "jwt", secret, alg: "HS256" }))
    .derive({ as: "scoped" }, ({ jwt }) => ({
      issueToken: async (user: { id: string; username: string }) => {
        const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
        // iat: true stamps the issue time (the plugin's default, said here because verification requires it).
        const token = await jwt.sign({ sub: user.id, username: user.username, iat: true, exp });
        return { token, expire: new Date(exp * 1000).toISOString() };
      },
    }));
}

/**
 * Verified tokens, briefly remembered: HMAC verification (and jose's key import) was ~10% of an
 * API process's CPU under load, and a client sends the same token on every request. An entry
 * is only ever a token that verified, kept no longer than its own expiry or 60 s.
 */
type Claims = { sub: string; username: string };
const verified = new Map<string, { claims: Claims; until: number }>();
const VERIFIED_MAX = TUNING.api.verifiedTokensMax;

function remember(token: string, claims: Claims, exp: number | undefined): void {
  if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
  verified.set(token, { claims, until: Math.min(Date.now() + 60_000, (exp ?? 0) * 1000) });
}

function remembered(token: string): Claims | undefined {
  const hit = verified.get(token);
  if (hit && hit.until <= Date.now()) verified.delete(token);
  return hit && hit.until > Date.now() ? hit.claims : undefined;
}

const unauthorized = (message: string) => new ApiError(401, "unauthorized", message);

const SKEW_S = TUNING.api.tokenSkewS;

/**
 * A token must say when it was issued and when it expires, and live no longer than JWT_TTL:
 * a token without `exp` (or with a far one), signed by anyone who once held the secret, would
 * otherwise be good forever.
 */
export function withinAge(claims: { iat?: unknown; exp?: unknown }, ttlSeconds: number, nowS = Date.now() / 1000): boolean {
  const { iat, exp } = claims;
  if (typeof iat !== "number" || typeof exp !== "number" || !Number.isFinite(iat) || !Number.isFinite(exp)) return false;
  return iat <= nowS + SKEW_S && exp > nowS && exp - iat <= ttlSeconds + SKEW_S;
}

/**
 * `isActive` says whether the token's user still exists and is not disabled; it may answer
 * from a cache no older than a second (UserStore.active), so such a user's tokens stop at once.
 */
export function requireUser(secret: string, ttlSeconds: number, isActive: (userId: string) => Promise<boolean>) {
  return new Elysia()
    .use(tokens(secret, ttlSeconds))
    .derive({ as: "scoped" }, async ({ headers, jwt, set, request }) => {
      const header = headers.authorization ?? "";
      const m = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i.exec(header.trim());
      if (!m) {
        set.headers["www-authenticate"] = 'Bearer realm="fairshare"';
        throw unauthorized(header ? "malformed Authorization header; expected 'Bearer <token>'" : "missing bearer token");
      }
      const token = m[1]!;
      let claims = remembered(token);
      if (!claims) {
        const verifiedClaims = await jwt.verify(token).catch(() => false as const);
        if (!verifiedClaims || typeof verifiedClaims.sub !== "string" || !/^\d{1,18}$/.test(verifiedClaims.sub) || !withinAge(verifiedClaims, ttlSeconds)) {
          set.headers["www-authenticate"] = 'Bearer realm="fairshare", error="invalid_token"';
          throw unauthorized("invalid or expired token");
        }
        claims = { sub: verifiedClaims.sub, username: typeof verifiedClaims.username === "string" ? verifiedClaims.username : "" };
        remember(token, claims, verifiedClaims.exp);
      }
      if (!(await isActive(claims.sub))) {
        set.headers["www-authenticate"] = 'Bearer realm="fairshare", error="invalid_token"';
        throw unauthorized("the token's user is disabled or no longer exists");
      }
      const problem = bodyProblems.get(request);
      if (problem) throw problem;
      return { userId: claims.sub, username: claims.username };
    });
}
