/** Users live in the first database. Passwords are argon2id hashes (Bun.password). */
import { randomBytes } from "node:crypto";
import { TUNING } from "../config.ts";
import type { Sql } from "../db/databases.ts";

export interface User {
  id: string;
  username: string;
  job_weight: number;
  disabled: boolean;
  /** The most of the user's jobs running at once; null: the configured default (USER_MAX_RUNNING). */
  max_running: number | null;
  /** True: none of the user's due jobs is dispatched until resumed. */
  paused: boolean;
}

const USER = "id, username, job_weight, disabled_at IS NOT NULL AS disabled, max_running, paused";

/** The most an operator may set users.max_running to through the API (the column allows more). */
export const MAX_RUNNING_LIMIT = 100_000;

/** The user as the API shows it (every user endpoint answers this shape). */
export function toUserView(u: User) {
  return { id: Number(u.id), username: u.username, job_weight: u.job_weight, disabled: u.disabled, max_running: u.max_running, paused: u.paused };
}

/** A user as the API shows it (the console's type too). */
export type UserView = ReturnType<typeof toUserView>;

/** A fresh per-user key for signing HTTP target calls (256 random bits). */
export function newSigningSecret(): string {
  return `whsec_${randomBytes(32).toString("hex")}`;
}

/**
 * Values looked up by key, kept `ttlMs` and shared by concurrent callers (one query per key at
 * a time, however many requests wait for it); at most `max` entries.
 */
export class ShortCache<V> {
  private readonly hits = new Map<string, { value: V; until: number }>();
  private readonly pending = new Map<string, Promise<V>>();

  constructor(
    private readonly ttlMs: number,
    private readonly load: (key: string) => Promise<V>,
    private readonly max = 100_000,
  ) {}

  get(key: string): Promise<V> {
    const hit = this.hits.get(key);
    if (hit && hit.until > Date.now()) return Promise.resolve(hit.value);
    let p = this.pending.get(key);
    if (!p) {
      const started = Date.now();
      p = this.load(key)
        .then((value) => {
          if (this.hits.size >= this.max) this.hits.delete(this.hits.keys().next().value!);
          this.hits.set(key, { value, until: started + this.ttlMs });
          return value;
        })
        .finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  forget(key: string): void {
    this.hits.delete(key);
  }
}

/** How stale a token check may be: a disabled or deleted user's tokens stop within this. */
export const ACTIVE_TTL_MS = TUNING.api.activeUserTtlMs;

export class UserStore {
  /** Whether a user exists and is not disabled, re-read every ACTIVE_TTL_MS. */
  private readonly activeCache: ShortCache<boolean>;

  constructor(private readonly sql: Sql) {
    this.activeCache = new ShortCache(ACTIVE_TTL_MS, async (id) => {
      const [row] = await this.sql<{ active: boolean }[]>`SELECT disabled_at IS NULL AS active FROM users WHERE id = ${id}`;
      return row?.active === true;
    });
  }

  /** Null when the username is taken. The signing secret is shown to the user once, here. */
  async create(username: string, password: string, jobWeight: number): Promise<(User & { signing_secret: string }) | null> {
    const hash = await Bun.password.hash(password, { algorithm: "argon2id" });
    const [row] = await this.sql<(User & { signing_secret: string })[]>`
      INSERT INTO users (username, password_hash, job_weight, signing_secret) VALUES (${username}, ${hash}, ${jobWeight}, ${newSigningSecret()})
      ON CONFLICT (username) DO NOTHING RETURNING ${this.sql.unsafe(USER)}, signing_secret`;
    return row ?? null;
  }

  /** The user when the password matches (disabled or not); null otherwise (same answer for unknown names). */
  async authenticate(username: string, password: string): Promise<User | null> {
    const [row] = await this.sql<(User & { password_hash: string })[]>`
      SELECT ${this.sql.unsafe(USER)}, password_hash FROM users WHERE username = ${username}`;
    if (!row) {
      // Spend comparable time so response timing does not reveal which usernames exist.
      await Bun.password.verify(password, DUMMY_HASH).catch(() => false);
      return null;
    }
    if (!(await Bun.password.verify(password, row.password_hash))) return null;
    const { password_hash: _, ...user } = row;
    return user;
  }

  async byId(id: string): Promise<User | null> {
    const [row] = await this.sql<User[]>`SELECT ${this.sql.unsafe(USER)} FROM users WHERE id = ${id}`;
    return row ?? null;
  }

  /** Users in id order after `afterId` (a page for operators). */
  async list(limit: number, afterId: string | null): Promise<User[]> {
    return this.sql<User[]>`SELECT ${this.sql.unsafe(USER)} FROM users WHERE id > ${afterId ?? "0"} ORDER BY id LIMIT ${limit}`;
  }

  /** Exists and is not disabled, as of at most ACTIVE_TTL_MS ago. */
  active(id: string): Promise<boolean> {
    return this.activeCache.get(id);
  }

  /**
   * Changes a user's weight, disabled flag and/or max_running (null: back to the configured
   * default; absent: unchanged); null when there is no such user.
   */
  async update(id: string, change: { job_weight?: number; disabled?: boolean; max_running?: number | null }): Promise<User | null> {
    const disabled = change.disabled === undefined ? null : change.disabled;
    const setMaxRunning = change.max_running !== undefined;
    const [row] = await this.sql<User[]>`
      UPDATE users SET job_weight = coalesce(${change.job_weight ?? null}::float8, job_weight),
        disabled_at = CASE WHEN ${disabled}::boolean IS NULL THEN disabled_at WHEN ${disabled}::boolean THEN coalesce(disabled_at, now()) END,
        max_running = CASE WHEN ${setMaxRunning}::boolean THEN ${change.max_running ?? null}::integer ELSE max_running END
      WHERE id = ${id} RETURNING ${this.sql.unsafe(USER)}`;
    this.activeCache.forget(id);
    return row ?? null;
  }

  /** Pauses (no due job of the user is dispatched) or resumes a user; idempotent. Null when there is no such user. */
  async setPaused(id: string, paused: boolean): Promise<User | null> {
    const [row] = await this.sql<User[]>`UPDATE users SET paused = ${paused} WHERE id = ${id} RETURNING ${this.sql.unsafe(USER)}`;
    return row ?? null;
  }

  /** Deletes the user row and its target limits; false when there was none. (Their jobs are the job store's.) */
  async delete(id: string): Promise<boolean> {
    const rows = await this.sql`
      WITH gone AS (DELETE FROM users WHERE id = ${id} RETURNING id), limits AS (DELETE FROM target_limits WHERE user_id IN (SELECT id FROM gone))
      SELECT id FROM gone`;
    this.activeCache.forget(id);
    return rows.length > 0;
  }

  /** A new signing secret; the one it replaces stays valid for `graceMs`. */
  async rotateSigningSecret(id: string, graceMs: number): Promise<{ signing_secret: string; previous_valid_until: Date } | null> {
    const [row] = await this.sql<{ signing_secret: string; previous_valid_until: Date }[]>`
      UPDATE users SET previous_signing_secret = signing_secret, signing_secret = ${newSigningSecret()},
        previous_signing_secret_until = now() + ${graceMs} * interval '1 millisecond'
      WHERE id = ${id} RETURNING signing_secret, previous_signing_secret_until AS previous_valid_until`;
    return row ?? null;
  }

  /** The keys a call for this user is signed with: the current one, then the previous while in grace. */
  async signingKeys(id: string): Promise<string[]> {
    const [row] = await this.sql<{ current: string; previous: string | null }[]>`
      SELECT signing_secret AS current, CASE WHEN previous_signing_secret_until > now() THEN previous_signing_secret END AS previous
      FROM users WHERE id = ${id}`;
    return row ? [row.current, ...(row.previous ? [row.previous] : [])] : [];
  }
}

const DUMMY_HASH = await Bun.password.hash("timing-equaliser", { algorithm: "argon2id" });
