/**
 * Key rotation (issue 31), through the real API on the real PostgreSQL: several API apps share
 * one database, each configured as an API process is at one step of a rotation
 * (docs/operations.md, "Rotating keys"), and a token issued by one is presented to another.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { decodeProtectedHeader, SignJWT } from "jose";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { apiRoutes } from "../src/http/api.ts";
import { rootApp } from "../src/http/server.ts";
import { IdGenerator } from "../src/ids.ts";
import { initTelemetry } from "../src/telemetry.ts";
import { client, expectError, signup } from "./support/http.ts";
import { freshDatabases, testConfig } from "./support/env.ts";

setDefaultTimeout(60_000);

const SHARDS = 4;
const OLD = "rotation-test-old-secret-0123456789abcdef";
const NEW = "rotation-test-new-secret-0123456789abcdef";
const STRANGER = "rotation-test-unknown-secret-0123456789ab";
const ADMIN_A = "rotation-test-admin-token-a-0123456789abcdef";
const ADMIN_B = "rotation-test-admin-token-b-0123456789abcdef";

/** What the `kid` of a secret's tokens must be, computed here independently of src/http/auth.ts. */
const kidOf = (secret: string) => createHash("sha256").update(secret).digest("hex").slice(0, 16);
const b64urlJson = (part: string) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

let dbs: Databases;
let drop: () => Promise<void>;
let urls: string[] = [];
let ids = 20;

/** An API app as one process runs it, with these secrets, on the shared database. */
function api(env: Record<string, string>) {
  const config = testConfig({ DATABASE_URLS: urls.join(","), SHARD_COUNT: String(SHARDS), LOGIN_ATTEMPTS_PER_MINUTE: "1000", ...env });
  return client(rootApp(config.api.maxBodyBytes, () => [], apiRoutes(config, dbs, new IdGenerator(ids++))));
}

// The steps of a JWT rotation from OLD to NEW.
let before: ReturnType<typeof client>; // JWT_SECRET=OLD
let step1: ReturnType<typeof client>; // JWT_SECRET=OLD, JWT_PREVIOUS_SECRETS=NEW
let step2: ReturnType<typeof client>; // JWT_SECRET=NEW, JWT_PREVIOUS_SECRETS=OLD
let step3: ReturnType<typeof client>; // JWT_SECRET=NEW
let userId: number;
let oldToken: string;

/** A token with the claims login gives, signed by `secret`, with the given protected header. */
async function handMade(secret: string, header: { alg: "HS256"; kid?: string }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: String(userId), username: "rot_user" }).setProtectedHeader(header).setIssuedAt(now).setExpirationTime(now + 600).sign(new TextEncoder().encode(secret));
}

beforeAll(async () => {
  initTelemetry({ exporter: "none", otlpEndpoint: "", zipkinEndpoint: "", serviceName: "fairshare-test", sampler: "parentbased_always_on", samplerRatio: 1 }, "api");
  const fresh = await freshDatabases(1);
  urls = fresh.urls;
  drop = fresh.drop;
  dbs = openDatabases(urls, SHARDS, 5);
  before = api({ JWT_SECRET: OLD });
  step1 = api({ JWT_SECRET: OLD, JWT_PREVIOUS_SECRETS: NEW });
  step2 = api({ JWT_SECRET: NEW, JWT_PREVIOUS_SECRETS: OLD });
  step3 = api({ JWT_SECRET: NEW });
  ({ id: userId, token: oldToken } = await signup(before, "rot_user"));
});

afterAll(async () => {
  await dbs?.close();
  await drop?.();
});

describe("JWT keys", () => {
  test("a token carries the kid of its signing key and no secret material", async () => {
    const [headerPart, payloadPart] = oldToken.split(".");
    const header = b64urlJson(headerPart!);
    const payload = b64urlJson(payloadPart!);
    expect(header).toEqual({ alg: "HS256", kid: kidOf(OLD), typ: "JWT" });
    expect(header.kid).toMatch(/^[0-9a-f]{16}$/);
    // The claims are the same as before keys had ids.
    expect(Object.keys(payload).sort()).toEqual(["exp", "iat", "sub", "username"]);
    for (const text of [oldToken, JSON.stringify(header), JSON.stringify(payload)]) expect(text).not.toContain(OLD);
    // The process signing with NEW names NEW's key.
    const login = await step2("POST", "/api/v1/auth/login", { body: { username: "rot_user", password: "correct horse battery" } });
    expect(login.status).toBe(200);
    expect(decodeProtectedHeader(login.json.data.token).kid).toBe(kidOf(NEW));
  });

  test("a token signed with a previous secret works while that secret is listed, and is 401 once it is removed", async () => {
    expect((await step2("GET", "/api/v1/me/jobs", { token: oldToken })).status).toBe(200);
    // It was just verified (and remembered) by a process that lists OLD; one that does not still refuses it.
    expectError(await step3("GET", "/api/v1/me/jobs", { token: oldToken }), 401, "unauthorized");
    expectError(await step3("POST", "/api/v1/auth/refresh", { token: oldToken }), 401, "unauthorized");
    // Refreshed where OLD is still accepted, it comes back signed with NEW, which works everywhere after the rotation.
    const refreshed = await step2("POST", "/api/v1/auth/refresh", { token: oldToken });
    expect(refreshed.status).toBe(200);
    expect(decodeProtectedHeader(refreshed.json.data.token).kid).toBe(kidOf(NEW));
    expect((await step3("GET", "/api/v1/me/jobs", { token: refreshed.json.data.token })).status).toBe(200);
  });

  test("during the rolling restart, a process not yet switched accepts the tokens a switched one issues", async () => {
    const login = await step2("POST", "/api/v1/auth/login", { body: { username: "rot_user", password: "correct horse battery" } });
    const newToken = login.json.data.token;
    expect((await step1("GET", "/api/v1/me/jobs", { token: newToken })).status).toBe(200);
    // Without step 1 (NEW not yet accepted) it would be refused: the reason step 1 comes first.
    expectError(await before("GET", "/api/v1/me/jobs", { token: newToken }), 401, "unauthorized");
  });

  test("a token without kid (issued before keys had ids) works when an accepted key signed it", async () => {
    const legacyOld = await handMade(OLD, { alg: "HS256" });
    const legacyNew = await handMade(NEW, { alg: "HS256" });
    expect(decodeProtectedHeader(legacyOld).kid).toBeUndefined();
    expect((await before("GET", "/api/v1/me/jobs", { token: legacyOld })).status).toBe(200);
    // OLD is a previous secret here: tried after JWT_SECRET.
    expect((await step2("GET", "/api/v1/me/jobs", { token: legacyOld })).status).toBe(200);
    expect((await step2("GET", "/api/v1/me/jobs", { token: legacyNew })).status).toBe(200);
    expectError(await step3("GET", "/api/v1/me/jobs", { token: legacyOld }), 401, "unauthorized");
  });

  test("a token signed with an unknown key is 401, whatever kid it names", async () => {
    const tokens = [
      await handMade(STRANGER, { alg: "HS256", kid: kidOf(STRANGER) }), // its own key's id
      await handMade(STRANGER, { alg: "HS256", kid: kidOf(NEW) }), // an accepted key's id
      await handMade(STRANGER, { alg: "HS256", kid: kidOf(OLD) }),
      await handMade(STRANGER, { alg: "HS256" }), // no id: every accepted key is tried
      await handMade(OLD, { alg: "HS256", kid: kidOf(NEW) }), // an accepted key, but not the one named
    ];
    for (const token of tokens) {
      for (const path of ["/api/v1/me/jobs", "/api/v1/auth/refresh"]) {
        const method = path.endsWith("refresh") ? "POST" : "GET";
        expectError(await step2(method, path, { token }), 401, "unauthorized");
      }
    }
    // The key a kid names is used even where another accepted key signed the token.
    expect((await step2("GET", "/api/v1/me/jobs", { token: await handMade(OLD, { alg: "HS256", kid: kidOf(OLD) }) })).status).toBe(200);
  });
});

describe("admin tokens", () => {
  test("every token in ADMIN_TOKEN's list is accepted; any other is 401", async () => {
    const both = api({ JWT_SECRET: NEW, ADMIN_TOKEN: `${ADMIN_A}, ${ADMIN_B}` });
    const onlyB = api({ JWT_SECRET: NEW, ADMIN_TOKEN: ADMIN_B });
    const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    for (const token of [ADMIN_A, ADMIN_B]) {
      const r = await both("GET", `/api/v1/admin/users/${userId}`, as(token));
      expect(r.status).toBe(200);
      expect(r.json.data.username).toBe("rot_user");
    }
    const stranger = randomBytes(32).toString("base64");
    expectError(await both("GET", `/api/v1/admin/users/${userId}`, as(stranger)), 401, "unauthorized");
    expectError(await both("GET", `/api/v1/admin/users/${userId}`, as(`${ADMIN_A},${ADMIN_B}`)), 401, "unauthorized");
    expectError(await both("GET", `/api/v1/admin/users/${userId}`, as(ADMIN_A.slice(0, -1))), 401, "unauthorized");
    // The old token, removed from the list, is refused.
    expectError(await onlyB("GET", `/api/v1/admin/users/${userId}`, as(ADMIN_A)), 401, "unauthorized");
    expect((await onlyB("GET", `/api/v1/admin/users/${userId}`, as(ADMIN_B))).status).toBe(200);
  });

  test("sign-up with a chosen weight (SIGNUP_WEIGHTS=admin) takes either token", async () => {
    const strict = api({ JWT_SECRET: NEW, ADMIN_TOKEN: `${ADMIN_A},${ADMIN_B}`, SIGNUP_WEIGHTS: "admin" });
    for (const [name, token] of [["rot_weight_a", ADMIN_A], ["rot_weight_b", ADMIN_B]] as const) {
      const r = await strict("POST", "/api/v1/users", { body: { username: name, password: "p4ssword!", job_weight: 4 }, headers: { authorization: `Bearer ${token}` } });
      expect(r.status).toBe(201);
      expect(r.json.data.job_weight).toBe(4);
    }
    expectError(await strict("POST", "/api/v1/users", { body: { username: "rot_weight_c", password: "p4ssword!", job_weight: 4 }, headers: { authorization: `Bearer ${randomBytes(32).toString("hex")}` } }), 403, "weight_requires_admin");
  });
});
