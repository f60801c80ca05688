/**
 * Bearer-token authentication. Tokens are HS256 JWTs carrying the user id in `sub`, signed (via
 * @elysiajs/jwt) with JWT_SECRET and a `kid` header naming that key (keyId). They are verified
 * (with jose, which the plugin uses too: the plugin holds one key) against JWT_SECRET and every
 * JWT_PREVIOUS_SECRETS, so tokens signed before a rotation keep working until their secret is
 * dropped (docs/operations.md, "Rotating keys"). `requireUser` runs before body validation, so a
 * bad token is a 401 whatever the body: a body that could not be used (src/http/json-body.ts) is
 * reported after the token is checked. (The plugins are unnamed on purpose: Elysia skips a named
 * plugin's second use, and both the login and the authenticated routes need their own derive.)
 */
import { createHash } from "node:crypto";
import { jwt } from "@elysiajs/jwt";
import { Elysia } from "elysia";
import { decodeProtectedHeader, jwtVerify, type JWTPayload } from "jose";
import { TUNING, type Config } from "../config.ts";
import { ApiError, bodyProblems } from "./errors.ts";

/**
 * A key's id, sent as the `kid` header of the tokens it signs: the first 16 hex digits of the
 * secret's SHA-256. Stable across processes and restarts, and it reveals nothing usable about
 * the secret (which is at least 32 characters).
 */
export function keyId(secret: string): string {
  return createHash("sha256").update(secret).digest("hex").slice(0, 16);
}

interface Key {
  kid: string;
  key: Uint8Array;
}

/** The accepted keys: the signing key (JWT_SECRET) first, then the previous ones in order; each once. */
export function acceptedKeys(settings: Pick<Config["jwt"], "secret" | "previousSecrets">): Key[] {
  const keys: Key[] = [];
  for (const secret of [settings.secret, ...settings.previousSecrets]) {
    const kid = keyId(secret);
    if (!keys.some((k) => k.kid === kid)) keys.push({ kid, key: new TextEncoder().encode(secret) });
  }
  return keys;
}

/**
 * The claims of a token signed (HS256) by one of `keys`, and that key's id; null otherwise. A
 * token with a `kid` is checked against that key only (an unknown `kid` is refused); one without
 * (issued before tokens carried one) against each key in turn.
 */
export async function verifyToken(token: string, keys: readonly Key[]): Promise<{ claims: JWTPayload; kid: string } | null> {
  let kid: unknown;
  try {
    ({ kid } = decodeProtectedHeader(token));
  } catch {
    return null;
  }
  const candidates = kid === undefined ? keys : keys.filter((k) => k.kid === kid);
  for (const k of candidates) {
    try {
      return { claims: (await jwtVerify(token, k.key, { algorithms: ["HS256"] })).payload, kid: k.kid };
    } catch {
      // Not this key's (or expired): the next, if any.
    }
  }
  return null;
}

export function tokens(settings: Pick<Config["jwt"], "secret" | "ttlSeconds">) {
  const { secret, ttlSeconds } = settings;
  return new Elysia()
    .use(jwt({ name: "jwt", secret, alg: "HS256", kid: keyId(secret) }))
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
 * is only ever a token that verified, kept no longer than its own expiry or 60 s, with the id of
 * the key that verified it: a hit counts only where that key is still accepted.
 */
type Claims = { sub: string; username: string };
const verified = new Map<string, { claims: Claims; kid: string; until: number }>();
const VERIFIED_MAX = TUNING.api.verifiedTokensMax;

function remember(token: string, claims: Claims, kid: string, exp: number | undefined): void {
  if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
  verified.set(token, { claims, kid, until: Math.min(Date.now() + 60_000, (exp ?? 0) * 1000) });
}

function remembered(token: string, keys: readonly Key[]): Claims | undefined {
  const hit = verified.get(token);
  if (hit && hit.until <= Date.now()) verified.delete(token);
  return hit && hit.until > Date.now() && keys.some((k) => k.kid === hit.kid) ? hit.claims : undefined;
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
export function requireUser(settings: Config["jwt"], isActive: (userId: string) => Promise<boolean>) {
  const { ttlSeconds } = settings;
  const keys = acceptedKeys(settings);
  return new Elysia()
    .derive({ as: "scoped" }, async ({ headers, set, request }) => {
      const header = headers.authorization ?? "";
      const m = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i.exec(header.trim());
      if (!m) {
        set.headers["www-authenticate"] = 'Bearer realm="fairshare"';
        throw unauthorized(header ? "malformed Authorization header; expected 'Bearer <token>'" : "missing bearer token");
      }
      const token = m[1]!;
      let claims = remembered(token, keys);
      if (!claims) {
        const result = await verifyToken(token, keys);
        if (!result || typeof result.claims.sub !== "string" || !/^\d{1,18}$/.test(result.claims.sub) || !withinAge(result.claims, ttlSeconds)) {
          set.headers["www-authenticate"] = 'Bearer realm="fairshare", error="invalid_token"';
          throw unauthorized("invalid or expired token");
        }
        const { username } = result.claims;
        claims = { sub: result.claims.sub, username: typeof username === "string" ? username : "" };
        remember(token, claims, result.kid, result.claims.exp);
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
