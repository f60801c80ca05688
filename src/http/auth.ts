/**
 * Bearer-token authentication. Tokens are HS256 JWTs (via @elysiajs/jwt) carrying the user id
 * in `sub`. `requireUser` runs before body validation, so a bad token is a 401 whatever the body:
 * its JSON parser defers a parse error until the token has been checked.
 * (The plugins are unnamed on purpose: Elysia skips a named plugin's second use, and both the
 * login and the authenticated routes need their own derive.)
 */
import { jwt } from "@elysiajs/jwt";
import { Elysia } from "elysia";
import { ApiError } from "./errors.ts";

export function tokens(secret: string, ttlSeconds: number) {
  return new Elysia()
    .use(jwt({ name: "jwt", secret, alg: "HS256" }))
    .derive({ as: "scoped" }, ({ jwt }) => ({
      issueToken: async (user: { id: string; username: string }) => {
        const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
        const token = await jwt.sign({ sub: user.id, username: user.username, exp });
        return { token, expire: new Date(exp * 1000).toISOString() };
      },
    }));
}

/**
 * Verified tokens, briefly remembered: HMAC verification (and jose's key import) was ~10% of an
 * API process's CPU under load, and a client sends the same token on every request. An entry
 * is only ever a token that verified, kept no longer than its own expiry or 60 s.
 */
const verified = new Map<string, { claims: { sub: string; username: string }; until: number }>();
const VERIFIED_MAX = 10_000;

function remember(token: string, claims: { sub: string; username: string }, exp: number | undefined): void {
  if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
  verified.set(token, { claims, until: Math.min(Date.now() + 60_000, (exp ?? 0) * 1000) });
}

/** Marks a JSON body that did not parse; reported as malformed_body after authentication. */
const MALFORMED = Object.freeze({ "#malformed": true });

const unauthorized = (message: string) => new ApiError(401, "unauthorized", message);

export function requireUser(secret: string, ttlSeconds: number) {
  return new Elysia()
    .use(tokens(secret, ttlSeconds))
    .onParse({ as: "scoped" }, async ({ request, contentType }) => {
      if (!contentType.toLowerCase().startsWith("application/json")) return;
      const text = await request.text();
      if (text.trim() === "") return {};
      try {
        return JSON.parse(text);
      } catch {
        return MALFORMED;
      }
    })
    .derive({ as: "scoped" }, async ({ headers, jwt, set, body }) => {
      const header = headers.authorization ?? "";
      const m = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/i.exec(header.trim());
      if (!m) {
        set.headers["www-authenticate"] = 'Bearer realm="fairshare"';
        throw unauthorized(header ? "malformed Authorization header; expected 'Bearer <token>'" : "missing bearer token");
      }
      const token = m[1]!;
      let cached = verified.get(token);
      if (cached && cached.until <= Date.now()) {
        verified.delete(token);
        cached = undefined;
      }
      if (!cached) {
        const claims = await jwt.verify(token).catch(() => false as const);
        if (!claims || typeof claims.sub !== "string" || !/^\d{1,18}$/.test(claims.sub)) {
          set.headers["www-authenticate"] = 'Bearer realm="fairshare", error="invalid_token"';
          throw unauthorized("invalid or expired token");
        }
        cached = { claims: { sub: claims.sub, username: typeof claims.username === "string" ? claims.username : "" }, until: 0 };
        remember(token, cached.claims, claims.exp);
      }
      if (body === MALFORMED) {
        throw new ApiError(400, "malformed_body", "the request body could not be parsed; send JSON with content-type application/json");
      }
      return { userId: cached.claims.sub, username: cached.claims.username };
    });
}
