/** Users live in the first database. Passwords are argon2id hashes (Bun.password). */
import type { Sql } from "../db/databases.ts";

export interface User {
  id: string;
  username: string;
  job_weight: number;
}

export function toUserView(u: User) {
  return { id: Number(u.id), username: u.username, job_weight: u.job_weight };
}

export class UserStore {
  /** Users known to exist, briefly cached: every job create checks its owner. */
  private existing = new Map<string, number>();

  constructor(
    private readonly sql: Sql,
    private readonly existsTtlMs = 30_000,
  ) {}

  /** Returns null when the username is taken. */
  async create(username: string, password: string, jobWeight: number): Promise<User | null> {
    const hash = await Bun.password.hash(password, { algorithm: "argon2id" });
    const [row] = await this.sql<User[]>`
      INSERT INTO users (username, password_hash, job_weight) VALUES (${username}, ${hash}, ${jobWeight})
      ON CONFLICT (username) DO NOTHING RETURNING id, username, job_weight`;
    return row ?? null;
  }

  /** The user when the password matches; null otherwise (same answer for unknown names). */
  async authenticate(username: string, password: string): Promise<User | null> {
    const [row] = await this.sql<(User & { password_hash: string })[]>`
      SELECT id, username, job_weight, password_hash FROM users WHERE username = ${username}`;
    if (!row) {
      // Spend comparable time so response timing does not reveal which usernames exist.
      await Bun.password.verify(password, DUMMY_HASH).catch(() => false);
      return null;
    }
    if (!(await Bun.password.verify(password, row.password_hash))) return null;
    return { id: row.id, username: row.username, job_weight: row.job_weight };
  }

  async byId(id: string): Promise<User | null> {
    const [row] = await this.sql<User[]>`SELECT id, username, job_weight FROM users WHERE id = ${id}`;
    return row ?? null;
  }

  /** Whether the user exists (cached for a short while). */
  async exists(id: string): Promise<boolean> {
    const until = this.existing.get(id);
    if (until !== undefined && until > Date.now()) return true;
    const user = await this.byId(id);
    if (!user) return false;
    this.existing.set(id, Date.now() + this.existsTtlMs);
    return true;
  }

  /** Sets a user's weight; null when there is no such user. */
  async setWeight(id: string, weight: number): Promise<User | null> {
    const [row] = await this.sql<User[]>`UPDATE users SET job_weight = ${weight} WHERE id = ${id} RETURNING id, username, job_weight`;
    return row ?? null;
  }
}

const DUMMY_HASH = await Bun.password.hash("timing-equaliser", { algorithm: "argon2id" });
