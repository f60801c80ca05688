/**
 * etcd access: the client, and a lease with a local watchdog.
 *
 * etcd3's own `lost` event fires only after 2 x TTL without a keep-alive, but the server
 * expires the lease after 1 x TTL: a process that trusted `lost` could act as a shard owner
 * for a whole TTL after another member took over. The watchdog declares the lease lost as soon
 * as TTL minus a safety margin has passed since the last keep-alive that etcd acknowledged
 * (measured from when that keep-alive was sent), which is strictly before the server can
 * expire it. Fencing in SQL (shard_fences) covers what no local clock can: a paused process.
 */
import { Etcd3, type Lease } from "etcd3";
import { TUNING, type Config } from "./config.ts";
import { log } from "./log.ts";

export function etcdClient(cfg: Config["etcd"]): Etcd3 {
  return new Etcd3({
    hosts: cfg.endpoints,
    dialTimeout: TUNING.etcd.dialTimeoutMs,
    // Unary calls get a deadline; streams (watch, keep-alive) must not.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + TUNING.etcd.callDeadlineMs }),
  });
}

export interface GuardedLease {
  lease: Lease;
  id: string;
  /** Milliseconds until the watchdog would declare the lease lost (<= 0 once lost). */
  remainingMs(): number;
  isLost(): boolean;
  /** Revokes the lease (deleting every key attached to it) and stops the watchdog. */
  revoke(): Promise<void>;
}

/**
 * Grants a lease kept alive in the background. `onLost` runs once, synchronously from a timer
 * or event, the moment the lease can no longer be trusted; the caller must stop acting on
 * anything tied to it at once.
 */
export async function grantGuardedLease(client: Etcd3, ttlSeconds: number, onLost: (reason: string) => void): Promise<GuardedLease> {
  const ttlMs = ttlSeconds * 1000;
  const marginMs = Math.max(TUNING.etcd.leaseMarginMinMs, ttlMs * TUNING.etcd.leaseMarginShare);
  const lease = client.lease(ttlSeconds, { autoKeepAlive: true });
  let sentAt = Date.now();
  const id = await lease.grant();
  let trustedUntil = sentAt + ttlMs - marginMs;
  let lost = false;
  let revoked = false;

  const declareLost = (reason: string) => {
    if (lost || revoked) return;
    lost = true;
    clearInterval(timer);
    log.warn("etcd lease lost", { lease: id, reason });
    onLost(reason);
  };
  lease.on("keepaliveFired", () => {
    sentAt = Date.now();
  });
  lease.on("keepaliveSucceeded", (res) => {
    if (Number(res.TTL) <= 0) return declareLost("etcd reports the lease expired");
    trustedUntil = sentAt + Number(res.TTL) * 1000 - marginMs;
  });
  lease.on("lost", (err) => declareLost(`etcd3 reported lost: ${err.message}`));
  const timer = setInterval(() => {
    if (Date.now() >= trustedUntil) declareLost(`no acknowledged keep-alive for ${ttlMs - marginMs} ms`);
  }, TUNING.etcd.leaseWatchdogEveryMs);

  return {
    lease,
    id,
    remainingMs: () => (lost ? 0 : trustedUntil - Date.now()),
    isLost: () => lost,
    revoke: async () => {
      revoked = true;
      clearInterval(timer);
      await lease.revoke().catch(() => {});
    },
  };
}
