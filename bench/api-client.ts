/**
 * The public API as the benchmarks use it (they measure what a user sees, so they create and
 * read jobs through it): users, batch creates, waiting for jobs to finish, reading them back.
 */
export interface Job {
  id: string;
  execute_at: string;
  started_at: string | null;
  finished_at: string | null;
  status: string;
  attempt: number;
}

export class ApiClient {
  /** A short tag that keeps usernames of different runs apart. */
  readonly run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 5)}`;

  constructor(readonly base = process.env.API_URL ?? `http://127.0.0.1:${process.env.API_PORT ?? 8080}`) {}

  async call(method: string, path: string, body?: unknown, token?: string, headers: Record<string, string> = {}): Promise<any> {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(this.base + path, {
        method,
        headers: { ...(body === undefined ? {} : { "content-type": "application/json" }), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const json: any = await res.json().catch(() => null);
      if (res.ok) return json;
      // A busy API may shed load; anything else is a bug worth stopping for.
      if ((res.status === 503 || res.status === 429) && attempt < 20) {
        await Bun.sleep(Number(res.headers.get("retry-after") ?? 1) * 1000);
        continue;
      }
      throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    }
  }

  /** Signs a user up (with ADMIN_TOKEN when set, for SIGNUP_WEIGHTS=admin) and logs in. */
  async user(name: string, weight = 1): Promise<string> {
    const username = `b_${this.run}_${name}`;
    const admin = process.env.ADMIN_TOKEN ? { authorization: `Bearer ${process.env.ADMIN_TOKEN}` } : undefined;
    await this.call("POST", "/api/v1/users", { username, password: "bench-password", job_weight: weight }, undefined, admin);
    return (await this.call("POST", "/api/v1/auth/login", { username, password: "bench-password" })).data.token;
  }

  /**
   * Creates n jobs due at at(i), in batches of 1,000, four requests at a time; returns the largest
   * id and every id in creation order (ids[i] is job i). `extra` is merged into every job (a
   * target, max_attempts, ...).
   */
  async create(token: string, at: (i: number) => number, n: number, tag: string, extra: Record<string, unknown> = {}): Promise<{ token: string; id: string; ids: string[] }> {
    const batches = Array.from({ length: Math.ceil(n / 1000) }, (_, b) => b);
    const ids = new Array<string>(n);
    let next = 0;
    let last = 0n;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < batches.length) {
          const b = batches[next++]!;
          const jobs = Array.from({ length: Math.min(1000, n - b * 1000) }, (_, k) => ({ ...extra, message: `${tag} ${b * 1000 + k}`, execute_at: new Date(at(b * 1000 + k)).toISOString() }));
          const created = await this.call("POST", "/api/v1/me/jobs/batch", { jobs }, token);
          created.data.forEach((j: Job, k: number) => {
            ids[b * 1000 + k] = j.id;
            if (BigInt(j.id) > last) last = BigInt(j.id);
          });
        }
      }),
    );
    return { token, id: last.toString(), ids };
  }

  /**
   * One request, answered whatever its status (for calls whose 409 is an expected answer); `at`
   * is when the answer arrived. Load shedding (503/429) is waited out as in `call`.
   */
  async send(method: string, path: string, body: unknown, token: string): Promise<{ status: number; json: any; at: number }> {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(this.base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const at = Date.now();
      const json: any = await res.json().catch(() => null);
      if ((res.status === 503 || res.status === 429) && attempt < 20) {
        await Bun.sleep(Number(res.headers.get("retry-after") ?? 1) * 1000);
        continue;
      }
      return { status: res.status, json, at };
    }
  }

  /** A fresh token for a valid one (POST /auth/refresh; no password hashing, unlike a login). */
  async refresh(token: string): Promise<string> {
    return (await this.call("POST", "/api/v1/auth/refresh", undefined, token)).data.token;
  }

  /**
   * Start times (ms) of a user's finished jobs (succeeded or failed, one listing), once
   * `expected` are (or after a minute); lighter than `finished` for many users.
   */
  async startTimes(token: string, expected: number): Promise<Float64Array> {
    for (let tries = 0; ; tries++) {
      const out: number[] = [];
      let cursor: string | null = null;
      do {
        const page: any = await this.call("GET", `/api/v1/me/jobs?limit=1000&status=succeeded,failed${cursor ? `&cursor=${cursor}` : ""}`, undefined, token);
        for (const j of page.data as Job[]) out.push(ms(j.started_at));
        cursor = page.next_cursor;
      } while (cursor);
      if (out.length >= expected || tries > 60) return Float64Array.from(out);
      await Bun.sleep(1_000);
    }
  }

  /**
   * Waits until the jobs in `last` are finished: per user, the one that finishes last (jobs due
   * at one instant start in id order within a user; a stream's last is due last). A primary-key
   * read per user per second, so the waiting costs the cluster nothing measurable.
   */
  async waitFinished(last: { token: string; id: string }[], timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const open = await Promise.all(last.map(async ({ token, id }) => (await this.call("GET", `/api/v1/me/jobs/${id}`, undefined, token)).data.finished_at === null));
      if (!open.some(Boolean)) return;
      if (Date.now() > until) throw new Error("jobs still open after the timeout");
      await Bun.sleep(1_000);
    }
  }

  /** Every finished job of a user, paging through GET /me/jobs, once `expected` are (or after a minute). */
  async finished(token: string, expected: number): Promise<Job[]> {
    for (let tries = 0; ; tries++) {
      const out: Job[] = [];
      for (const status of ["succeeded", "failed"]) {
        let cursor: string | null = null;
        do {
          const page: any = await this.call("GET", `/api/v1/me/jobs?limit=1000&status=${status}${cursor ? `&cursor=${cursor}` : ""}`, undefined, token);
          out.push(...page.data);
          cursor = page.next_cursor;
        } while (cursor);
      }
      if (out.length >= expected || tries > 60) return out;
      await Bun.sleep(1_000);
    }
  }
}

export const ms = (iso: string | null) => (iso ? Date.parse(iso) : NaN);
