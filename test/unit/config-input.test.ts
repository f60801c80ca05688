import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, parseDuration, parseRole } from "../../src/config.ts";
import { checkJob, parseTimestamp } from "../../src/jobs/job-input.ts";

describe("configuration", () => {
  test("defaults are valid in local mode", () => {
    const c = loadConfig({});
    expect(c.mode).toBe("local");
    expect(c.databaseUrls).toEqual(["postgres://root@127.0.0.1:5432/fairshare"]);
    expect(c.kafka.topicDue).toBe("jobs.due");
    expect(c.shardCount).toBe(16);
  });

  test("every bad variable is named in one error", () => {
    try {
      loadConfig({ PORT: "http", SHARD_COUNT: "0", DATABASE_URLS: "mysql://x/y", KAFKA_BROKERS: "nohostport", SCHEDULER_LOOKAHEAD: "soon", HTTP_TARGET_ALLOW_PRIVATE: "maybe" });
      throw new Error("expected a ConfigError");
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const msg = (e as Error).message;
      for (const name of ["PORT", "SHARD_COUNT", "DATABASE_URLS", "KAFKA_BROKERS", "SCHEDULER_LOOKAHEAD", "HTTP_TARGET_ALLOW_PRIVATE"]) expect(msg).toContain(name);
    }
  });

  test("production requires secrets; a short JWT secret is refused", () => {
    expect(() => loadConfig({ APP_MODE: "production" })).toThrow(/JWT_SECRET: required/);
    expect(() => loadConfig({ TARGET_SIGNING_SECRET: "x".repeat(40) })).toThrow(/TARGET_SIGNING_SECRET: no longer used/);
    expect(() => loadConfig({ JWT_SECRET: "short" })).toThrow(/at least 32/);
    expect(() => loadConfig({ APP_MODE: "production", JWT_SECRET: "x".repeat(40) })).toThrow(/ADMIN_TOKEN: required/);
    expect(() => loadConfig({ ADMIN_TOKEN: "short" })).toThrow(/ADMIN_TOKEN: must be at least 32/);
    const prod = loadConfig({ APP_MODE: "production", JWT_SECRET: "s".repeat(32), ADMIN_TOKEN: "a".repeat(32) });
    expect(prod.executor.httpAllowPrivate).toBe(false);
    expect(loadConfig({}).executor.httpAllowPrivate).toBe(true);
  });

  test("who may choose a weight at sign-up: open locally, admin in production, either on request", () => {
    const secrets = { JWT_SECRET: "s".repeat(32), ADMIN_TOKEN: "a".repeat(32) };
    expect(loadConfig({}).users).toEqual({ defaultWeight: 1, defaultMaxRunning: Infinity, signupWeights: "open", signingGraceMs: 86_400_000 });
    expect(loadConfig({ APP_MODE: "production", ...secrets }).users.signupWeights).toBe("admin");
    expect(loadConfig({ SIGNUP_WEIGHTS: "admin", DEFAULT_JOB_WEIGHT: "2.5", SIGNING_SECRET_GRACE: "1h" }).users).toEqual({ defaultWeight: 2.5, defaultMaxRunning: Infinity, signupWeights: "admin", signingGraceMs: 3_600_000 });
    expect(loadConfig({ USER_MAX_RUNNING: "10" }).users.defaultMaxRunning).toBe(10);
    expect(() => loadConfig({ SIGNUP_WEIGHTS: "anyone" })).toThrow(/SIGNUP_WEIGHTS/);
    expect(() => loadConfig({ DEFAULT_JOB_WEIGHT: "0" })).toThrow(/DEFAULT_JOB_WEIGHT/);
    expect(() => loadConfig({ DEFAULT_JOB_WEIGHT: "5000" })).toThrow(/DEFAULT_JOB_WEIGHT/);
  });

  test("a variable this version no longer reads is named, not silently ignored", () => {
    expect(() => loadConfig({ SCHEDULER_CREDITS: "2000" })).toThrow(/SCHEDULER_CREDITS: no longer used/);
  });

  test("production refuses the example secrets published in this repository; local mode makes and keeps a random one", () => {
    const good = { APP_MODE: "production", JWT_SECRET: "s".repeat(32), ADMIN_TOKEN: "a".repeat(32) };
    expect(() => loadConfig({ ...good, JWT_SECRET: "compose-only-secret-change-me-0123456789ab" })).toThrow(/JWT_SECRET: is an example value/);
    expect(() => loadConfig({ ...good, ADMIN_TOKEN: "compose-only-admin-token-change-me-0123456789" })).toThrow(/ADMIN_TOKEN: is an example value/);
    expect(() => loadConfig({ ...good, JWT_SECRET: "local-development-secret-change-me-0123456789" })).toThrow(/example value/);
    const a = loadConfig({});
    const b = loadConfig({});
    expect(a.jwt.secret.length).toBeGreaterThanOrEqual(48);
    expect(a.jwt.secret).toBe(b.jwt.secret); // every local process shares it
    expect(a.jwt.secret).not.toBe("local-development-secret-change-me-0123456789");
  });

  test("more databases than shards is refused", () => {
    expect(() => loadConfig({ SHARD_COUNT: "1", DATABASE_URLS: "postgres://a/b,postgres://a/c" })).toThrow(/SHARD_COUNT/);
  });

  test("durations and roles", () => {
    expect(parseDuration("500ms")).toBe(500);
    expect(parseDuration("10s")).toBe(10_000);
    expect(parseDuration("1.5m")).toBe(90_000);
    expect(parseDuration("365d")).toBe(365 * 86_400_000);
    expect(parseDuration("250")).toBe(250);
    expect(parseDuration("10 parsecs")).toBeNull();
    expect(parseRole("all")).toBe("all");
    expect(() => parseRole("worker")).toThrow(/expected one of api, scheduler, executor, all/);
    expect(() => parseRole(undefined)).toThrow(ConfigError);
  });
});

describe("job input", () => {
  const limits = { jobHorizonMs: 86_400_000, defaultMaxAttempts: 3 };
  const now = Date.UTC(2030, 0, 1, 12);

  test("timestamps need an offset and a real calendar date", () => {
    expect(parseTimestamp("2030-01-01T12:00:00Z")?.getTime()).toBe(now);
    expect(parseTimestamp("2030-01-01T19:00:00+07:00")?.getTime()).toBe(now);
    expect(parseTimestamp("2030-01-01T19:00:00.123456789+0700")?.getTime()).toBe(now + 123);
    for (const bad of ["2030-01-01T12:00:00", "2030-02-29T00:00:00Z", "2030-13-01T00:00:00Z", "2030-01-01T24:00:00Z", "2030-01-01", "x", "2030-01-01T12:00:00+7"]) {
      expect(parseTimestamp(bad)).toBeNull();
    }
    expect(parseTimestamp("2028-02-29T00:00:00Z")).not.toBeNull();
  });

  test("past means now; beyond the horizon is a problem at the right path", () => {
    expect(checkJob({ message: "m", execute_at: "2000-01-01T00:00:00Z" }, now, limits).spec!.executeAt.getTime()).toBe(now);
    const far = checkJob({ message: "m", execute_at: "2030-01-03T12:00:00Z" }, now, limits, "/jobs/4");
    expect(far.spec).toBeUndefined();
    expect(far.problems).toEqual([{ path: "/jobs/4/execute_at", message: expect.stringContaining("at most 1 days") }]);
  });

  test("targets: http(s) only, no credentials, no executor-owned headers; method defaults to POST", () => {
    const ok = checkJob({ message: "m", execute_at: "2030-01-01T12:00:00Z", target: { url: "https://h.test/x" } }, now, limits);
    expect(ok.spec!.target).toEqual({ url: "https://h.test/x", method: "POST", headers: {}, timeout_ms: null });
    const bad = checkJob({ message: "m", execute_at: "2030-01-01T12:00:00Z", target: { url: "gopher://h", headers: { "X-Signature": "x", "bad name": "v", ok: "a\r\nb" } } }, now, limits);
    expect(bad.problems.map((p) => p.path).sort()).toEqual(["/target/headers/X-Signature", "/target/headers/bad name", "/target/headers/ok", "/target/url"]);
  });
});
