/**
 * Which databases answer, so the hot paths never wait for one that does not.
 *
 * postgres.js keeps a query queued while it reconnects to a database that refuses connections,
 * with a backoff that grows to 20 s: measured, a statement issued just after the first failure
 * waited for the whole 30 s outage, and a dispatch or a claim waiting for one database held up
 * the jobs of every other. So a hot-path statement goes through `within`:
 * - a database known to be out fails it at once (DatabaseOut), without issuing it;
 * - otherwise it has `ms` to answer; past that, or on an error that says the database is
 *   unreachable (isUnavailable), the database is out, and the caller is told so at once. A
 *   statement that was issued may still complete later: `late` gets its result, for the caller
 *   to act on (a claimed job is run, a marked one put back);
 * - an out database is probed (one probe at a time) every `probeEveryMs`; the first answer
 *   brings it back. A probe opens a connection of its own: the pool's back off for up to 20 s
 *   after failed attempts, and a probe queued behind them stayed out long after the database
 *   answered.
 */
import { isUnavailable } from "./databases.ts";
import { log } from "../log.ts";

export class DatabaseOut extends Error {
  /** A driver-like code: isUnavailable (src/db/databases.ts) counts it as the database being unreachable. */
  readonly code = "DATABASE_OUT";
  constructor(readonly db: number) {
    super(`database ${db} is out (not answering); its statements wait until it answers again`);
    this.name = "DatabaseOut";
  }
}

export class DatabaseGate {
  private readonly out = new Set<number>();
  private readonly probing = new Set<number>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    /** Resolves once database `db` answers (a fresh connection). */
    private readonly probeOnce: (db: number) => Promise<void>,
    private readonly probeEveryMs: number,
  ) {}

  isOut(db: number): boolean {
    return this.out.has(db);
  }

  /** Runs a statement on database `db` unless it is out, and answers within `ms` (see above). */
  within<T>(db: number, ms: number, run: () => Promise<T>, late?: (value: T) => void): Promise<T> {
    if (this.out.has(db)) return Promise.reject(new DatabaseOut(db));
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        this.markOut(db, "no answer in time");
        reject(new DatabaseOut(db));
      }, ms);
      run().then(
        (v) => {
          clearTimeout(timer);
          if (!settled) resolve(v);
          else late?.(v);
        },
        (e) => {
          clearTimeout(timer);
          if (isUnavailable(e)) this.markOut(db, (e as Error).message);
          if (!settled) reject(e);
        },
      );
    });
  }

  /**
   * Runs a write the caller could not take back, whatever the database's state (a database
   * marked out a moment ago may answer again before the probe says so), and marks the database
   * out on an error that says it is unreachable: the API steers new jobs away from it.
   */
  watch<T>(db: number, run: () => Promise<T>): Promise<T> {
    return run().catch((e: unknown) => {
      if (isUnavailable(e)) this.markOut(db, (e as Error).message);
      throw e;
    });
  }

  private markOut(db: number, reason: string): void {
    if (this.out.has(db)) return;
    this.out.add(db);
    log.warn("a database does not answer; its statements fail at once until it does", { database: db, reason });
    this.timer ??= setInterval(() => this.probe(), this.probeEveryMs);
  }

  private probe(): void {
    for (const db of this.out) {
      if (this.probing.has(db)) continue;
      this.probing.add(db);
      this.probeOnce(db)
        .then(
          () => {
            this.out.delete(db);
            log.info("a database answers again", { database: db });
          },
          () => {},
        )
        .finally(() => this.probing.delete(db));
    }
    if (this.out.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
