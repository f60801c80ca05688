/**
 * Node numbers for the id generators (src/ids.ts), leased in the users database (id_nodes,
 * sql/000017): two live processes never share one, however many processes started before.
 *
 * A process takes a free or expired number (one statement: of two racing for one, the second
 * finds it taken and tries again), renews it every `renewMs` and gives it back when it stops.
 * Invariant: it mints ids only while its lease is valid by its own clock: until `ttlMs - marginMs`
 * after the start of the last renewal the database acknowledged, which is before the database
 * can let another process take the number (expires_at = that renewal's now() + ttlMs). A
 * process paused past that (a stopped VM, a long GC) finds its lease run out when it resumes and
 * refuses to mint until a renewal succeeds; a renewal that finds the number taken by another
 * holder takes a new number.
 */
import { NODE_BITS, type NodeSource } from "../ids.ts";
import { log } from "../log.ts";
import type { Sql } from "./databases.ts";

const NODES = 2 ** Number(NODE_BITS);
const RELEASE_HOLD_MS = 5_000;

export class NoFreeNodeError extends Error {
  constructor() {
    super(`all ${NODES} id node numbers are leased by live processes`);
  }
}

export interface NodeLeaseSettings {
  ttlMs: number;
  renewMs: number;
  marginMs: number;
}

export class NodeLease implements NodeSource {
  private node: number | null = null;
  private validUntil = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private renewing: Promise<void> | null = null;

  private constructor(
    private readonly sql: Sql,
    private readonly holder: string,
    private readonly s: NodeLeaseSettings,
  ) {}

  /** Takes a node number and keeps it renewed; rejects (NoFreeNodeError) when none is free. */
  static async take(sql: Sql, holder: string, s: NodeLeaseSettings): Promise<NodeLease> {
    const lease = new NodeLease(sql, holder, s);
    await lease.acquire();
    lease.timer = setInterval(() => void lease.renew(), s.renewMs);
    return lease;
  }

  /** The node number while the lease is valid by this process's clock; null otherwise. */
  current(): number | null {
    return this.node !== null && Date.now() < this.validUntil ? this.node : null;
  }

  /**
   * Stops minting and renewing, and gives the number back: free RELEASE_HOLD_MS later, so that
   * a process taking it next, on a host whose clock is behind, cannot mint in a millisecond this
   * one minted in.
   */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.renewing;
    const node = this.node;
    this.node = null;
    if (node !== null)
      await this.sql`UPDATE id_nodes SET expires_at = least(expires_at, now() + ${RELEASE_HOLD_MS} * interval '1 millisecond')
        WHERE node = ${node} AND holder = ${this.holder}`.catch(() => {});
  }

  /** A free or expired number, from a random start (racing processes rarely want the same one). */
  private async acquire(): Promise<void> {
    for (let tries = 0; tries < 10; tries++) {
      const startedAt = Date.now();
      const start = Math.floor(Math.random() * NODES);
      const [row] = await this.sql<{ node: number }[]>`
        INSERT INTO id_nodes AS t (node, holder, expires_at)
        SELECT n, ${this.holder}, now() + ${this.s.ttlMs} * interval '1 millisecond'
        FROM (SELECT (${start} + i) % ${NODES} AS n FROM generate_series(0, ${NODES - 1}) i) c
        WHERE NOT EXISTS (SELECT 1 FROM id_nodes d WHERE d.node = c.n AND d.expires_at > now())
        LIMIT 1
        ON CONFLICT (node) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at WHERE t.expires_at <= now()
        RETURNING node`;
      if (row) {
        this.node = row.node;
        this.validUntil = startedAt + this.s.ttlMs - this.s.marginMs;
        return;
      }
      const held = await this.sql<{ free: number }[]>`SELECT ${NODES} - count(*)::int AS free FROM id_nodes WHERE expires_at > now()`;
      if (held[0]!.free === 0) throw new NoFreeNodeError();
    }
    throw new NoFreeNodeError();
  }

  /** Extends the lease; if another holder has the number now, takes a new one. One at a time. */
  private renew(): Promise<void> {
    if (this.renewing) return this.renewing;
    this.renewing = (async () => {
      const startedAt = Date.now();
      try {
        if (this.node !== null) {
          const rows = await this.sql`
            UPDATE id_nodes SET expires_at = now() + ${this.s.ttlMs} * interval '1 millisecond'
            WHERE node = ${this.node} AND holder = ${this.holder} RETURNING node`;
          if (rows.length > 0) {
            this.validUntil = startedAt + this.s.ttlMs - this.s.marginMs;
            return;
          }
          log.warn("id node lease lost to another process; taking a new node number", { node: this.node });
          this.node = null;
        }
        await this.acquire();
        log.info("id node lease taken", { node: this.node });
      } catch (err) {
        log.warn("id node lease not renewed; ids are not minted once it runs out", { node: this.node, err: err as Error });
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }
}
