/**
 * The one place that reads the environment. `loadConfig` validates every setting once, at start,
 * and either returns a typed, frozen Config or throws a ConfigError that names each bad variable.
 * Nothing else in the codebase reads `process.env`.
 *
 * Durations accept `500ms`, `10s`, `5m`, `1h`, `365d` or a bare number of milliseconds.
 */

export type Role = "api" | "scheduler" | "executor" | "all";
export const ROLES: readonly Role[] = ["api", "scheduler", "executor", "all"];

export interface Config {
  /** `local` relaxes secrets (a fixed dev JWT secret) and allows loopback HTTP targets. */
  mode: "local" | "production";
  port: number;
  host: string;
  logLevel: "debug" | "info" | "warn" | "error";
  shutdownTimeoutMs: number;
  /** Physical databases; the first also holds users. Logical shards map onto them in ranges. */
  databaseUrls: string[];
  dbPoolMax: number;
  shardCount: number;
  kafka: {
    brokers: string[];
    clientId: string;
    topicDue: string;
    topicDlq: string;
    partitions: number;
    replicationFactor: number;
    groupId: string;
  };
  etcd: { endpoints: string[]; prefix: string; leaseTtlSeconds: number };
  jwt: { secret: string; ttlSeconds: number };
  api: { jobHorizonMs: number; maxBodyBytes: number; batchMax: number; defaultMaxAttempts: number };
  executor: {
    concurrency: number;
    backoffBaseMs: number;
    backoffMaxMs: number;
    /** Time allowed past a run's own timeout before the rescuer may assume the executor died. */
    runGraceMs: number;
    httpAllowPrivate: boolean;
    signingSecret: string;
    defaultTimeoutMs: number;
  };
  scheduler: {
    /** Jobs due within this window are loaded ahead and dispatched at execute_at. */
    lookaheadMs: number;
    pollIntervalMs: number;
    /** Per shard: at most this many jobs dispatched and not yet finished. */
    credits: number;
    batchMax: number;
    perUserLoad: number;
    maxLoad: number;
    /** A scheduled job not claimed by then is rescued (its message was lost or its run died). */
    scheduledDeadlineMs: number;
    rescueIntervalMs: number;
    /** Jobs are marked `scheduled` up to this much before execute_at and published at it. */
    premarkMs: number;
  };
  otel: { endpoint: string | null; serviceName: string };
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

const LOCAL_JWT_SECRET = "local-development-secret-change-me-0123456789";

/** Parses `10s`-style durations into milliseconds; null when malformed. */
export function parseDuration(raw: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(raw);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? "ms"]!;
  return Math.round(n * unit);
}

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const str = (name: string, def: string): string => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? def : v.trim();
  };
  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = str(name, String(def));
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)}: expected an integer from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const duration = (name: string, def: string, minMs: number): number => {
    const raw = str(name, def);
    const ms = parseDuration(raw);
    if (ms === null || ms < minMs) {
      problems.push(`${name}=${JSON.stringify(raw)}: expected a duration such as 500ms, 10s, 5m, 1h, 7d (at least ${minMs}ms)`);
      return parseDuration(def)!;
    }
    return ms;
  };
  const bool = (name: string, def: boolean): boolean => {
    const raw = str(name, String(def)).toLowerCase();
    if (["1", "true", "yes", "on"].includes(raw)) return true;
    if (["0", "false", "no", "off"].includes(raw)) return false;
    problems.push(`${name}=${JSON.stringify(raw)}: expected true or false`);
    return def;
  };
  const list = (name: string, def: string, check: (item: string) => boolean, what: string): string[] => {
    const items = str(name, def).split(",").map((s) => s.trim()).filter(Boolean);
    if (items.length === 0) problems.push(`${name}: expected a comma-separated list of ${what}`);
    for (const item of items) {
      if (!check(item)) problems.push(`${name}: ${JSON.stringify(item)} is not a valid ${what}`);
    }
    return items;
  };
  const oneOf = <T extends string>(name: string, def: T, allowed: readonly T[]): T => {
    const raw = str(name, def);
    if (!allowed.includes(raw as T)) {
      problems.push(`${name}=${JSON.stringify(raw)}: expected one of ${allowed.join(", ")}`);
      return def;
    }
    return raw as T;
  };
  const isUrl = (protocols: string[]) => (s: string) => {
    try {
      return protocols.includes(new URL(s).protocol);
    } catch {
      return false;
    }
  };

  const mode = oneOf("APP_MODE", "local", ["local", "production"] as const);
  const jwtSecretRaw = env.JWT_SECRET?.trim() ?? "";
  let jwtSecret = jwtSecretRaw;
  if (jwtSecretRaw === "") {
    if (mode === "production") problems.push("JWT_SECRET: required when APP_MODE=production (at least 32 characters)");
    jwtSecret = LOCAL_JWT_SECRET;
  } else if (jwtSecretRaw.length < 32) {
    problems.push("JWT_SECRET: must be at least 32 characters");
  }
  const signingRaw = env.TARGET_SIGNING_SECRET?.trim() ?? "";
  if (signingRaw === "" && mode === "production") {
    problems.push("TARGET_SIGNING_SECRET: required when APP_MODE=production (signs outbound HTTP calls)");
  }

  const config: Config = {
    mode,
    port: int("PORT", 8080, 0, 65535),
    host: str("HOST", "127.0.0.1"),
    logLevel: oneOf("LOG_LEVEL", "info", ["debug", "info", "warn", "error"] as const),
    shutdownTimeoutMs: duration("SHUTDOWN_TIMEOUT", "20s", 100),
    databaseUrls: list("DATABASE_URLS", "postgres://root@127.0.0.1:5432/fairshare", isUrl(["postgres:", "postgresql:"]), "postgres:// URL"),
    dbPoolMax: int("DB_POOL_MAX", 10, 1, 500),
    shardCount: int("SHARD_COUNT", 16, 1, 4096),
    kafka: {
      brokers: list("KAFKA_BROKERS", "127.0.0.1:9092", (s) => /^[^:\s]+:\d{1,5}$/.test(s), "host:port"),
      clientId: str("KAFKA_CLIENT_ID", "fairshare"),
      topicDue: str("KAFKA_TOPIC_DUE", "jobs.due"),
      topicDlq: str("KAFKA_TOPIC_DLQ", "jobs.dlq"),
      partitions: int("KAFKA_PARTITIONS", 12, 1, 10_000),
      replicationFactor: int("KAFKA_REPLICATION_FACTOR", 1, 1, 7),
      groupId: str("KAFKA_GROUP_ID", "fairshare-executors"),
    },
    etcd: {
      endpoints: list("ETCD_ENDPOINTS", "http://127.0.0.1:2379", isUrl(["http:", "https:"]), "http(s):// URL"),
      prefix: str("ETCD_PREFIX", "/fairshare"),
      leaseTtlSeconds: int("ETCD_LEASE_TTL_SECONDS", 10, 2, 300),
    },
    jwt: { secret: jwtSecret, ttlSeconds: Math.round(duration("JWT_TTL", "1h", 1_000) / 1000) },
    api: {
      jobHorizonMs: duration("JOB_HORIZON", "365d", 1_000),
      maxBodyBytes: int("API_MAX_BODY_BYTES", 1_048_576, 1_024, 64 * 1_048_576),
      batchMax: int("API_BATCH_MAX", 1_000, 1, 10_000),
      defaultMaxAttempts: int("JOB_DEFAULT_MAX_ATTEMPTS", 3, 1, 100),
    },
    executor: {
      concurrency: int("EXECUTOR_CONCURRENCY", 2_000, 1, 10_000),
      backoffBaseMs: duration("RETRY_BACKOFF_BASE", "1s", 1),
      backoffMaxMs: duration("RETRY_BACKOFF_MAX", "10m", 1),
      runGraceMs: duration("JOB_RUN_GRACE", "30s", 100),
      httpAllowPrivate: bool("HTTP_TARGET_ALLOW_PRIVATE", mode === "local"),
      signingSecret: signingRaw || LOCAL_JWT_SECRET,
      defaultTimeoutMs: duration("HTTP_TARGET_TIMEOUT", "10s", 100),
    },
    scheduler: {
      lookaheadMs: duration("SCHEDULER_LOOKAHEAD", "2s", 100),
      pollIntervalMs: duration("SCHEDULER_POLL_INTERVAL", "500ms", 10),
      credits: int("SCHEDULER_CREDITS", 2_000, 1, 1_000_000),
      batchMax: int("SCHEDULER_BATCH_MAX", 500, 1, 10_000),
      perUserLoad: int("SCHEDULER_PER_USER_LOAD", 500, 1, 100_000),
      maxLoad: int("SCHEDULER_MAX_LOAD", 5_000, 1, 1_000_000),
      scheduledDeadlineMs: duration("SCHEDULED_DEADLINE", "60s", 1_000),
      rescueIntervalMs: duration("RESCUE_INTERVAL", "5s", 100),
      premarkMs: duration("SCHEDULER_PREMARK", "250ms", 0),
    },
    otel: {
      endpoint: str("OTEL_EXPORTER_OTLP_ENDPOINT", "") || null,
      serviceName: str("OTEL_SERVICE_NAME", "fairshare"),
    },
  };
  if (config.otel.endpoint && !isUrl(["http:", "https:"])(config.otel.endpoint)) {
    problems.push(`OTEL_EXPORTER_OTLP_ENDPOINT=${JSON.stringify(config.otel.endpoint)}: expected an http(s):// URL`);
  }
  if (config.databaseUrls.length > config.shardCount) {
    problems.push(`SHARD_COUNT=${config.shardCount}: must be at least the number of DATABASE_URLS (${config.databaseUrls.length})`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** The role named on the command line; throws a ConfigError naming the argument. */
export function parseRole(arg: string | undefined): Role {
  if (arg && (ROLES as readonly string[]).includes(arg)) return arg as Role;
  throw new ConfigError([`role ${JSON.stringify(arg ?? "")}: expected one of ${ROLES.join(", ")} (usage: bun src/main.ts <role>)`]);
}
