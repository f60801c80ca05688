/**
 * The one place that reads the environment. `loadConfig` validates every setting once, at start,
 * and either returns a typed, frozen Config or throws a ConfigError that names each bad variable.
 * Nothing else in the codebase reads `process.env`.
 *
 * Durations accept `500ms`, `10s`, `5m`, `1h`, `365d` or a bare number of milliseconds.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BackoffPolicy } from "../actors/backoff.ts";
import type { DispatcherSettings } from "../actors/dispatcher.ts";
import { MAX_WEIGHT, MIN_WEIGHT } from "../actors/fair-queue.ts";
import type { ShardSettings } from "../actors/shard.machine.ts";
import { parsePgUrl, splitDatabaseUrls } from "./db/pg-url.ts";
import { isProxySpec } from "./http/client-address.ts";

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
  maintenance: {
    /** Start in production although a database runs with autovacuum off (the scheduler vacuums). */
    autovacuumOffOk: boolean;
    /** A job table with this many dead row versions is vacuumed by a scheduler (0: never). */
    vacuumDeadTuples: number;
    vacuumCheckMs: number;
    /** Finished jobs (and their attempts) are deleted this long after they finished. */
    jobRetentionMs: number;
    /** Idempotency keys are deleted this long after their first use (a later repeat creates anew). */
    idempotencyKeyTtlMs: number;
    retentionIntervalMs: number;
  };
  kafka: {
    brokers: string[];
    clientId: string;
    topicDue: string;
    topicDlq: string;
    partitions: number;
    replicationFactor: number;
    groupId: string;
    /** KAFKA_SESSION_TIMEOUT: a dead executor's partitions wait this long for a new owner. The
     * broker's group.min.session.timeout.ms bounds it from below (6 s by default in Kafka and
     * Redpanda; the local broker allows 1 s, and ops/lib.sh asks for 3 s). */
    sessionTimeoutMs: number;
  };
  etcd: {
    endpoints: string[];
    prefix: string;
    leaseTtlSeconds: number;
    /** Schedulers re-plan shard ownership on every change they watch, and at least this often. */
    replanIntervalMs: number;
  };
  /**
   * `secret` (JWT_SECRET) signs tokens; it and `previousSecrets` (JWT_PREVIOUS_SECRETS, older
   * secrets kept through a rotation, docs/operations.md) verify them.
   */
  jwt: { secret: string; previousSecrets: string[]; ttlSeconds: number };
  api: {
    jobHorizonMs: number;
    maxBodyBytes: number;
    batchMax: number;
    defaultMaxAttempts: number;
    /** Unfinished jobs a user may have (0: no limit). Checked per API process, about a second stale. */
    maxPendingPerUser: number;
    /** Job creations per user per second, per API process (0: no limit). */
    createsPerUserPerSecond: number;
    /** Failed logins per username per minute, from anywhere, per API process (0: no limit). */
    loginAttemptsPerMinute: number;
    /** Different usernames failing to log in from one client address per minute, per API process (0: no limit; src/http/limits.ts). */
    loginAttemptsPerAddressPerMinute: number;
    /** Peers whose X-Forwarded-For is believed (IPs and CIDRs; empty: none). */
    trustedProxies: string[];
    /** Every request is answered within this (503 `unavailable` past it). */
    requestTimeoutMs: number;
  };
  executor: {
    /** Run slots (runs in flight, claims included). */
    concurrency: number;
    /** Slots kept free for each active user holding fewer, and for a newcomer (actors/slots.ts). */
    userReserve: number;
    /** After a failed attempt, the next waits this (exponential, equal jitter); the rescuer uses it too. */
    retry: BackoffPolicy;
    /** Time allowed past a run's own timeout before the rescuer may assume the executor died. */
    runGraceMs: number;
    httpAllowPrivate: boolean;
    defaultTimeoutMs: number;
  };
  /**
   * The shard actors' settings (ShardSettings), the dispatcher's (DispatcherSettings, with its
   * start window) and the process's own; each field is documented where it is used.
   */
  scheduler: ShardSettings &
    Omit<DispatcherSettings, "defaultWeight" | "partitions"> & {
      /** While jobs are out, the executors' committed offsets are read back to back, at least this far apart. */
      startPollMs: number;
      /** A scheduled job not claimed by then is rescued (its message was lost or its run died). */
      scheduledDeadlineMs: number;
      /** How often the users' weights are re-read (a changed weight applies within this). */
      weightRefreshMs: number;
      /** Demand reports are exchanged with the other schedulers this often (one fair order for the cluster). */
      shareIntervalMs: number;
      /** Capped users' jobs in flight are counted this often (a cap's room is seen within it). */
      capIntervalMs: number;
    };
  users: {
    /** The weight of a user who does not choose one. */
    defaultWeight: number;
    /** A user's cap on jobs dispatched and not finished at once, unless it has its own (users.max_running); Infinity: none. */
    defaultMaxRunning: number;
    /** `open`: anyone may choose a weight at sign-up; `admin`: only with the admin token. */
    signupWeights: "open" | "admin";
    /** After a rotation, calls are signed with the previous secret too for this long. */
    signingGraceMs: number;
  };
  /** Bearer tokens of the admin endpoints, any of them accepted (ADMIN_TOKEN, comma-separated; empty: they answer 401 to everyone). */
  adminTokens: string[];
  /** The web console (/console): CONSOLE_TRACE_URL, a trace UI's page with `{trace_id}` in it (null: no trace links). */
  console: { traceUrl: string | null };
  /**
   * Traces (OpenTelemetry environment conventions): OTEL_TRACES_EXPORTER picks the exporter
   * (`otlp`, `zipkin` or `none`; unset: `otlp` when OTEL_EXPORTER_OTLP_ENDPOINT is set, else
   * `none`); each role's service name is OTEL_SERVICE_NAME plus `-api`, `-scheduler`, `-executor`.
   */
  otel: {
    exporter: "otlp" | "zipkin" | "none";
    otlpEndpoint: string;
    zipkinEndpoint: string;
    serviceName: string;
    /** OTEL_TRACES_SAMPLER and its argument (the ratio of the `traceidratio` samplers). */
    sampler: (typeof SAMPLERS)[number];
    samplerRatio: number;
  };
}

/**
 * Fixed tuning: values chosen by measurement or by a protocol's rules, not per deployment, kept
 * here so each is named once, with its reason. (Settings an operator changes are in Config.)
 */
export const TUNING = {
  db: {
    /** A database out (src/db/gate.ts) is probed this often; the first answer brings it back. */
    probeEveryMs: 1_000,
    /** A hot-path statement (a claim, a mark) not answered within this marks its database out: measured, a claim takes ~5-25 ms, and a statement queued in postgres.js while it reconnects to a database that refuses connections waited the whole outage. */
    answerWithinMs: 3_000,
  },
  kafka: {
    connectionTimeoutMs: 3_000,
    requestTimeoutMs: 30_000,
    rebalanceTimeoutMs: 30_000,
    /** Heartbeats go at least this often, and three times per session at least (KAFKA_SESSION_TIMEOUT). */
    heartbeatIntervalMs: 1_000,
    /** The broker answers a fetch as soon as data arrives; this only spaces out empty fetches. */
    fetchMaxWaitMs: 1_000,
    clientRetry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 8 },
    producerRetry: { initialRetryTime: 100, maxRetryTime: 2_000, retries: 10 },
  },
  etcd: {
    dialTimeoutMs: 3_000,
    callDeadlineMs: 5_000,
    /** A lease is trusted until its TTL less this share of it (at least 500 ms) after the last
     * acknowledged keep-alive: the margin covers clock drift and a slow acknowledgement. */
    leaseMarginShare: 0.2,
    leaseMarginMinMs: 500,
    leaseWatchdogEveryMs: 100,
  },
  executor: {
    /** Commits of durable claims are grouped this long (one request for many). */
    commitGapMs: 50,
    /** A failed commit is retried this often (and a missed one caught up). */
    commitRetryMs: 1_000,
    /** A database that failed jobs' claims is probed this often; once it answers they are claimed (executor.ts, takeJob). */
    awaitDatabaseEveryMs: 1_000,
    /** Above this event-loop delay p99 the executor is under pressure: borrowed slots go back (src/executor/executor.ts, steerSlots)... */
    pressureDelayMs: 50,
    /** ...measured over this. */
    pressureEveryMs: 250,
    /** Each executor reports its slots (and the users waiting for one) to the schedulers this often. */
    slotReportMs: 100,
    /** A partition takes up to this many times the run slots in jobs waiting for a slot, then is held. */
    readAheadSlots: 8,
    /** A user keeps its guard of slots this long after its last job (actors/slots.ts). */
    userActiveMs: 10_000,
    /** An outcome record that failed (database unreachable) is retried from this, doubling, to that. */
    recordRetryMinMs: 200,
    recordRetryMaxMs: 2_000,
    /** ...while the database is unreachable, up to this long past the run's deadline (an outage spends no attempt). */
    recordPastDeadlineMs: 120_000,
    /** A user's signing keys are cached this long (a rotation reaches the calls within it). */
    signingKeysTtlMs: 5_000,
    /** Target limits (actors/target-limits.ts): re-read this often (a changed limit applies within it)... */
    targetLimitsEveryMs: 1_000,
    /** ...a job waits this long at most for its target's permits here, then is deferred to the database... */
    targetWaitMs: 500,
    /** ...waiting jobs are let go (a rate's second moved on) or deferred this often... */
    targetTickMs: 25,
    /** ...the leases are renewed this often while a limited target is in use, last this long in the database... */
    targetLeaseEveryMs: 100,
    targetLeaseTtlMs: 2_000,
    /** ...and are used here until this long before they expire there (clock rates, a slow renewal). */
    targetLeaseMarginMs: 500,
    /** A limited target with nothing running or waiting is forgotten (its leases given up) after this. */
    targetIdleMs: 5_000,
  },
  scheduler: {
    /** The executors' offsets are read this often while nothing is held back but jobs are out... */
    offsetsPollMs: 200,
    /** ...and this often when nothing is out. */
    offsetsIdlePollMs: 2_000,
    /** Executors whose slot report is older than their Kafka session (at least this) are lost: their runs are rescued at once (shard-ownership.ts, rescueLost)... */
    lostExecutorMinMs: 3_000,
    /** ...looked for this often... */
    lostExecutorsEveryMs: 500,
    /** ...among reports younger than this (older ones' runs are long past their deadlines). */
    lostExecutorForgetMs: 600_000,
    /** Dead-letter records a rescue publishes from its shard's outbox per pass (the rest next pass). */
    outboxBatch: 1_000,
  },
  api: {
    /** The id generator's node number (src/db/node-id.ts): leased this long, renewed this often, used until this margin before it runs out. */
    nodeLease: { ttlMs: 30_000, renewMs: 5_000, marginMs: 5_000 },
    /** A disabled or deleted user's tokens stop within this. */
    activeUserTtlMs: 500,
    /** A batch's commit point must be reached this long before the request's time bound, so its answer is the one given (src/jobs/batches.ts). */
    batchDecideMarginMs: 2_000,
    /** Verified tokens remembered (HMAC verification was ~10 % of an API process's CPU). */
    verifiedTokensMax: 10_000,
    /** Clock skew allowed between the process that issued a token and the one checking it. */
    tokenSkewS: 60,
    /** Deepest JSON nesting of a request body; this API needs 4. */
    maxJsonDepth: 32,
    /**
     * The operator view's activity: an interval this long past its end is read once and kept
     * (an attempt is recorded when it ends, so runs longer than this, ending later, are not
     * added to it); newer ones are read again on every refresh. Bounds a refresh's work to this
     * much of job_attempts whatever the window (bench/activity.ts).
     */
    activitySettleMs: 60_000,
    /** Users shown in the activity view (the most starts first); the rest still count in the totals. */
    activityMaxUsers: 20,
    /** Activity answers are shared for this long: every open operator view polls the same window. */
    activityCacheMs: 1_000,
  },
  maintenance: {
    /** Schedulers look for staged batch rows whose request is over this often (src/db/maintenance.ts, StagedBatchKeeper). */
    stagedBatchesEveryMs: 10_000,
    retentionBatch: 1_000,
    /** Batches per table per retention pass; a backlog drains over several passes. */
    retentionMaxBatches: 200,
    retentionPauseMs: 10,
  },
} as const;

/** The OpenTelemetry environment's sampler names. */
export const SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"] as const;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

/**
 * Local mode's secret when none is given: random, made on first start and kept in
 * `.local/local-secret` (mode 0600) so every process of the local cluster shares it. Never a
 * value in the source: a deployment that forgot APP_MODE would accept tokens anyone can forge.
 */
function localSecret(): string {
  const dir = join(import.meta.dir, "..", ".local");
  const file = join(dir, "local-secret");
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    mkdirSync(dir, { recursive: true });
    try {
      writeFileSync(file, randomBytes(48).toString("base64url"), { flag: "wx", mode: 0o600 });
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw e; // another process made it first
    }
    return readFileSync(file, "utf8").trim();
  }
}

/** Example values that appeared in this repository (compose.yaml, older source): never secrets. */
const EXAMPLE_SECRETS = new Set([
  "local-development-secret-change-me-0123456789",
  "compose-only-secret-change-me-0123456789ab",
  "compose-only-signing-secret-0123456789",
  "compose-only-admin-token-change-me-0123456789",
]);

/** Variables this version no longer reads, and what replaced them. */
const REMOVED: Record<string, string> = {
  SCHEDULER_CREDITS: "the in-flight window is measured now; see SCHEDULER_TARGET_DELAY",
  TARGET_SIGNING_SECRET: "HTTP target calls are signed with each user's own secret (POST /api/v1/me/signing-secret)",
};

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
  const list = (name: string, def: string, check: (item: string) => boolean, what: string, split = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean)): string[] => {
    const items = split(str(name, def));
    if (items.length === 0) problems.push(`${name}: expected a comma-separated list of ${what}`);
    for (const item of items) {
      if (!check(item)) problems.push(`${name}: ${JSON.stringify(item)} is not a valid ${what}`);
    }
    return items;
  };
  /** A comma-separated list that may be empty (the default). */
  const optionalList = (name: string, check: (item: string) => boolean, what: string): string[] => {
    const items = str(name, "").split(",").map((x) => x.trim()).filter(Boolean);
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
  const number = (name: string, def: number, min: number, max: number): number => {
    const raw = str(name, String(def));
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)}: expected a number from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const isUrl = (protocols: string[]) => (s: string) => {
    try {
      return protocols.includes(new URL(s).protocol);
    } catch {
      return false;
    }
  };

  for (const [name, why] of Object.entries(REMOVED)) if (env[name] !== undefined) problems.push(`${name}: no longer used (${why})`);
  const mode = oneOf("APP_MODE", "local", ["local", "production"] as const);
  /** A comma-separated list of secrets, each at least 32 characters; a bad one is named by its place, never shown. */
  const secrets = (name: string): string[] => {
    const items = (env[name] ?? "").split(",").map((x) => x.trim()).filter(Boolean);
    items.forEach((item, i) => {
      if (item.length < 32) problems.push(`${name}: must be at least 32 characters${items.length > 1 ? ` (entry ${i + 1} of ${items.length})` : ""}`);
    });
    return items;
  };
  const adminTokens = secrets("ADMIN_TOKEN");
  if (adminTokens.length === 0 && mode === "production") problems.push("ADMIN_TOKEN: required when APP_MODE=production (at least 32 characters)");
  const jwtPreviousSecrets = secrets("JWT_PREVIOUS_SECRETS");
  const jwtSecretRaw = env.JWT_SECRET?.trim() ?? "";
  let jwtSecret = jwtSecretRaw;
  if (jwtSecretRaw === "") {
    if (mode === "production") problems.push("JWT_SECRET: required when APP_MODE=production (at least 32 characters)");
    else jwtSecret = localSecret();
  } else if (jwtSecretRaw.length < 32) {
    problems.push("JWT_SECRET: must be at least 32 characters");
  }
  const named = (name: string, values: string[]) => values.map((value) => [name, value] as const);
  for (const [name, value] of [["JWT_SECRET", jwtSecretRaw] as const, ...named("JWT_PREVIOUS_SECRETS", jwtPreviousSecrets), ...named("ADMIN_TOKEN", adminTokens)]) {
    if (mode === "production" && EXAMPLE_SECRETS.has(value)) problems.push(`${name}: is an example value published in this repository; generate one (openssl rand -base64 48)`);
  }

  const config: Config = {
    mode,
    port: int("PORT", 8080, 0, 65535),
    host: str("HOST", "127.0.0.1"),
    logLevel: oneOf("LOG_LEVEL", "info", ["debug", "info", "warn", "error"] as const),
    shutdownTimeoutMs: duration("SHUTDOWN_TIMEOUT", "20s", 100),
    databaseUrls: list("DATABASE_URLS", "postgres://root@127.0.0.1:5432/fairshare", (u) => parsePgUrl(u) !== null, "postgres:// URL (hosts may be a list: h1:5441,h2:5442)", splitDatabaseUrls),
    dbPoolMax: int("DB_POOL_MAX", 10, 1, 500),
    shardCount: int("SHARD_COUNT", 16, 1, 4096),
    maintenance: {
      autovacuumOffOk: bool("DB_AUTOVACUUM_OFF_OK", false),
      vacuumDeadTuples: int("DB_VACUUM_DEAD_TUPLES", 50_000, 0, 1_000_000_000),
      vacuumCheckMs: duration("DB_VACUUM_CHECK_INTERVAL", "10s", 100),
      jobRetentionMs: duration("JOB_RETENTION", "30d", 1_000),
      idempotencyKeyTtlMs: duration("IDEMPOTENCY_KEY_TTL", "24h", 1_000),
      retentionIntervalMs: duration("RETENTION_INTERVAL", "1m", 100),
    },
    kafka: {
      brokers: list("KAFKA_BROKERS", "127.0.0.1:9092", (s) => /^[^:\s]+:\d{1,5}$/.test(s), "host:port"),
      clientId: str("KAFKA_CLIENT_ID", "fairshare"),
      topicDue: str("KAFKA_TOPIC_DUE", "jobs.due"),
      topicDlq: str("KAFKA_TOPIC_DLQ", "jobs.dlq"),
      partitions: int("KAFKA_PARTITIONS", 12, 1, 10_000),
      replicationFactor: int("KAFKA_REPLICATION_FACTOR", 1, 1, 7),
      groupId: str("KAFKA_GROUP_ID", "fairshare-executors"),
      sessionTimeoutMs: duration("KAFKA_SESSION_TIMEOUT", "6s", 1_000),
    },
    etcd: {
      endpoints: list("ETCD_ENDPOINTS", "http://127.0.0.1:2379", isUrl(["http:", "https:"]), "http(s):// URL"),
      prefix: str("ETCD_PREFIX", "/fairshare"),
      leaseTtlSeconds: int("ETCD_LEASE_TTL_SECONDS", 10, 2, 300),
      replanIntervalMs: 5_000,
    },
    jwt: { secret: jwtSecret, previousSecrets: jwtPreviousSecrets, ttlSeconds: Math.round(duration("JWT_TTL", "1h", 1_000) / 1000) },
    api: {
      jobHorizonMs: duration("JOB_HORIZON", "365d", 1_000),
      maxBodyBytes: int("API_MAX_BODY_BYTES", 1_048_576, 1_024, 64 * 1_048_576),
      batchMax: int("API_BATCH_MAX", 1_000, 1, 10_000),
      defaultMaxAttempts: int("JOB_DEFAULT_MAX_ATTEMPTS", 3, 1, 100),
      maxPendingPerUser: int("QUOTA_PENDING_JOBS", 1_000_000, 0, 1_000_000_000),
      createsPerUserPerSecond: int("QUOTA_CREATES_PER_SECOND", 0, 0, 10_000_000),
      loginAttemptsPerMinute: int("LOGIN_ATTEMPTS_PER_MINUTE", 10, 0, 1_000_000),
      loginAttemptsPerAddressPerMinute: int("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE", 1_000, 0, 1_000_000),
      trustedProxies: optionalList("TRUSTED_PROXIES", isProxySpec, "IP address or CIDR (10.0.0.0/8, fd00::/8)"),
      requestTimeoutMs: duration("API_REQUEST_TIMEOUT", "10s", 100),
    },
    executor: {
      concurrency: int("EXECUTOR_CONCURRENCY", 4_000, 1, 100_000),
      userReserve: int("EXECUTOR_USER_RESERVE", 40, 0, 100_000),
      retry: { baseMs: duration("RETRY_BACKOFF_BASE", "1s", 1), maxMs: duration("RETRY_BACKOFF_MAX", "10m", 1) },
      runGraceMs: duration("JOB_RUN_GRACE", "30s", 100),
      httpAllowPrivate: bool("HTTP_TARGET_ALLOW_PRIVATE", mode === "local"),
      defaultTimeoutMs: duration("HTTP_TARGET_TIMEOUT", "10s", 100),
    },
    scheduler: {
      lookaheadMs: duration("SCHEDULER_LOOKAHEAD", "4s", 100),
      pollIntervalMs: duration("SCHEDULER_POLL_INTERVAL", "5s", 10),
      window: {
        targetDelayMs: duration("SCHEDULER_TARGET_DELAY", "100ms", 20),
        minJobs: int("SCHEDULER_WINDOW_MIN", 1_024, 1, 1_000_000),
        maxJobs: int("SCHEDULER_WINDOW_MAX", 100_000, 1, 10_000_000),
        // One start-rate sample spans 100 ms (several commits and offset reads); the window
        // follows the best sample of the last second, so a dip in commits does not shrink it.
        rateSpanMs: 100,
        rateMemoryMs: 1_000,
      },
      startPollMs: duration("SCHEDULER_START_POLL", "50ms", 1),
      batchMax: int("SCHEDULER_BATCH_MAX", 1_000, 1, 10_000),
      batchMin: 100,
      batchesInFlight: int("SCHEDULER_BATCHES_IN_FLIGHT", 8, 1, 64),
      userTarget: int("SCHEDULER_PER_USER_LOAD", 500, 2, 100_000),
      maxLoad: int("SCHEDULER_MAX_LOAD", 5_000, 1, 1_000_000),
      maxQueued: int("SCHEDULER_MAX_QUEUED", 200_000, 1_000, 10_000_000),
      scheduledDeadlineMs: duration("SCHEDULED_DEADLINE", "60s", 1_000),
      rescueIntervalMs: duration("RESCUE_INTERVAL", "5s", 100),
      fullRescueMs: duration("RESCUE_FULL_INTERVAL", "5m", 1_000),
      premarkMs: duration("SCHEDULER_PREMARK", "250ms", 0),
      premarkEveryMs: 50,
      publishSlotMs: duration("SCHEDULER_PUBLISH_SLOT", "25ms", 1),
      retryDelayMs: duration("SCHEDULER_RETRY_DELAY", "1s", 10),
      weightRefreshMs: duration("SCHEDULER_WEIGHT_REFRESH", "1s", 50),
      shareIntervalMs: duration("SCHEDULER_SHARE_INTERVAL", "100ms", 20),
      capIntervalMs: duration("SCHEDULER_CAP_INTERVAL", "50ms", 10),
    },
    users: {
      defaultWeight: number("DEFAULT_JOB_WEIGHT", 1, MIN_WEIGHT, MAX_WEIGHT),
      // 0: no default cap.
      defaultMaxRunning: int("USER_MAX_RUNNING", 0, 0, 100_000) || Infinity,
      signupWeights: oneOf("SIGNUP_WEIGHTS", mode === "production" ? "admin" : "open", ["open", "admin"] as const),
      signingGraceMs: duration("SIGNING_SECRET_GRACE", "24h", 0),
    },
    adminTokens,
    console: { traceUrl: str("CONSOLE_TRACE_URL", "") || null },
    otel: {
      exporter: oneOf("OTEL_TRACES_EXPORTER", env.OTEL_EXPORTER_OTLP_ENDPOINT ? "otlp" : "none", ["otlp", "zipkin", "none"] as const),
      otlpEndpoint: str("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
      zipkinEndpoint: str("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://localhost:9411/api/v2/spans"),
      serviceName: str("OTEL_SERVICE_NAME", "fairshare"),
      sampler: oneOf("OTEL_TRACES_SAMPLER", "parentbased_always_on", SAMPLERS),
      samplerRatio: number("OTEL_TRACES_SAMPLER_ARG", 1, 0, 1),
    },
  };
  for (const [name, value] of [["OTEL_EXPORTER_OTLP_ENDPOINT", config.otel.otlpEndpoint], ["OTEL_EXPORTER_ZIPKIN_ENDPOINT", config.otel.zipkinEndpoint]] as const) {
    if (!isUrl(["http:", "https:"])(value)) problems.push(`${name}=${JSON.stringify(value)}: expected an http(s):// URL`);
  }
  const traceUrl = config.console.traceUrl;
  if (traceUrl !== null && (!traceUrl.includes("{trace_id}") || !isUrl(["http:", "https:"])(traceUrl.replace("{trace_id}", "0")))) {
    problems.push(`CONSOLE_TRACE_URL=${JSON.stringify(traceUrl)}: expected an http(s):// URL containing {trace_id}`);
  }
  if (config.scheduler.window.minJobs > config.scheduler.window.maxJobs) {
    problems.push(`SCHEDULER_WINDOW_MIN=${config.scheduler.window.minJobs}: must not exceed SCHEDULER_WINDOW_MAX (${config.scheduler.window.maxJobs})`);
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
