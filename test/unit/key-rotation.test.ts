/**
 * Key rotation (issue 31) without a database: how JWT_PREVIOUS_SECRETS and ADMIN_TOKEN lists are
 * read and validated, which keys a token is checked against, and the admin token comparison.
 * (test/auth-rotation.test.ts drives the same through the API.)
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { SignJWT } from "jose";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { isAdmin } from "../../src/http/admin.ts";
import { acceptedKeys, keyId, verifyToken } from "../../src/http/auth.ts";

const A = "a".repeat(32);
const B = "b".repeat(40);
const C = "c".repeat(36);

/** The problems loadConfig reports for `env`, or [] when it loads. */
function problems(env: Record<string, string>): string[] {
  try {
    loadConfig({ JWT_SECRET: "s".repeat(32), ...env });
    return [];
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.problems;
  }
}

describe("configuration", () => {
  test("JWT_PREVIOUS_SECRETS: a comma-separated list, empty by default", () => {
    expect(loadConfig({ JWT_SECRET: A }).jwt).toEqual({ secret: A, previousSecrets: [], ttlSeconds: 3_600 });
    expect(loadConfig({ JWT_SECRET: A, JWT_PREVIOUS_SECRETS: ` ${B} ,${C},` }).jwt.previousSecrets).toEqual([B, C]);
  });

  test("a previous secret shorter than 32 characters is a problem named by its place, without its value", () => {
    const short = "too-short-previous-secret";
    expect(problems({ JWT_PREVIOUS_SECRETS: short })).toEqual(["JWT_PREVIOUS_SECRETS: must be at least 32 characters"]);
    const listed = problems({ JWT_PREVIOUS_SECRETS: `${B},${short}` });
    expect(listed).toEqual(["JWT_PREVIOUS_SECRETS: must be at least 32 characters (entry 2 of 2)"]);
    expect(listed.join("\n")).not.toContain(short);
    // Reported with every other bad variable, in one error.
    expect(problems({ JWT_PREVIOUS_SECRETS: short, PORT: "http" }).map((p) => p.split(/[:=]/)[0])).toEqual(["JWT_PREVIOUS_SECRETS", "PORT"]);
  });

  test("ADMIN_TOKEN: one token or a list, each at least 32 characters; production needs one", () => {
    expect(loadConfig({ JWT_SECRET: A }).adminTokens).toEqual([]);
    expect(loadConfig({ ADMIN_TOKEN: A }).adminTokens).toEqual([A]);
    expect(loadConfig({ ADMIN_TOKEN: `${A}, ${B}` }).adminTokens).toEqual([A, B]);
    expect(problems({ ADMIN_TOKEN: `${A},short-admin-token` })).toEqual(["ADMIN_TOKEN: must be at least 32 characters (entry 2 of 2)"]);
    expect(problems({ APP_MODE: "production", ADMIN_TOKEN: " , " })).toEqual(["ADMIN_TOKEN: required when APP_MODE=production (at least 32 characters)"]);
    expect(problems({ APP_MODE: "production", ADMIN_TOKEN: `${A},${B}` })).toEqual([]);
  });

  test("production refuses a published example value in either list", () => {
    const example = "compose-only-secret-change-me-0123456789ab";
    expect(problems({ APP_MODE: "production", ADMIN_TOKEN: A, JWT_PREVIOUS_SECRETS: `${B},${example}` })).toEqual([
      "JWT_PREVIOUS_SECRETS: is an example value published in this repository; generate one (openssl rand -base64 48)",
    ]);
    expect(problems({ APP_MODE: "production", ADMIN_TOKEN: `${A},compose-only-admin-token-change-me-0123456789` })).toEqual([
      "ADMIN_TOKEN: is an example value published in this repository; generate one (openssl rand -base64 48)",
    ]);
  });
});

describe("JWT keys", () => {
  const sign = (secret: string, kid?: string) =>
    new SignJWT({ sub: "1" }).setProtectedHeader(kid === undefined ? { alg: "HS256" } : { alg: "HS256", kid }).setIssuedAt().setExpirationTime("5m").sign(new TextEncoder().encode(secret));

  test("a key's id is the first 16 hex digits of the secret's SHA-256", () => {
    expect(keyId(A)).toBe(createHash("sha256").update(A).digest("hex").slice(0, 16));
    expect(keyId(A)).not.toBe(keyId(B));
  });

  test("the signing key comes first, then the previous ones, each once", () => {
    expect(acceptedKeys({ secret: A, previousSecrets: [B, A, C, B] }).map((k) => k.kid)).toEqual([keyId(A), keyId(B), keyId(C)]);
  });

  test("a token is checked against the key its kid names; without kid, against each key", async () => {
    const keys = acceptedKeys({ secret: A, previousSecrets: [B] });
    expect((await verifyToken(await sign(B, keyId(B)), keys))?.kid).toBe(keyId(B));
    expect((await verifyToken(await sign(B), keys))?.kid).toBe(keyId(B));
    expect((await verifyToken(await sign(A), keys))?.kid).toBe(keyId(A));
    expect(await verifyToken(await sign(B, keyId(A)), keys)).toBeNull(); // names A, signed by B
    expect(await verifyToken(await sign(C, keyId(C)), keys)).toBeNull(); // unknown key
    expect(await verifyToken(await sign(C), keys)).toBeNull();
    expect(await verifyToken(await sign(B), acceptedKeys({ secret: A, previousSecrets: [] }))).toBeNull();
    expect(await verifyToken("not.a.jwt", keys)).toBeNull();
  });

  test("only HS256 is accepted", async () => {
    const hs512 = await new SignJWT({ sub: "1" }).setProtectedHeader({ alg: "HS512", kid: keyId(A) }).setIssuedAt().setExpirationTime("5m").sign(new TextEncoder().encode(A));
    expect(await verifyToken(hs512, acceptedKeys({ secret: A, previousSecrets: [] }))).toBeNull();
  });
});

describe("admin tokens", () => {
  test("any listed token is an admin's; nothing else is, and no list admits no one", () => {
    for (const token of [A, B]) expect(isAdmin(`Bearer ${token}`, [A, B])).toBe(true);
    expect(isAdmin(`bearer  ${B} `, [A, B])).toBe(true);
    for (const header of [`Bearer ${C}`, `Bearer ${A}${B}`, `Bearer ${A},${B}`, `Bearer ${A.slice(1)}`, A, "", null, undefined]) expect(isAdmin(header, [A, B])).toBe(false);
    expect(isAdmin(`Bearer ${A}`, [])).toBe(false);
  });
});
