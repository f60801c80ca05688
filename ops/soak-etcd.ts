/**
 * etcd soak under Bun: holds a lease with keep-alives and an open watch for SOAK_MINUTES
 * (default 10) while putting a key every 100 ms, then reports whether any keep-alive failed,
 * the lease was lost, or any watch event went missing or arrived out of order.
 * Exit code 0 only when nothing was lost.
 *
 *   bun ops/soak-etcd.ts            # 10 minutes
 *   SOAK_MINUTES=1 bun ops/soak-etcd.ts
 */
import { loadConfig } from "../src/config.ts";
import { etcdClient, grantGuardedLease } from "../src/etcd.ts";

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
const config = loadConfig();
const client = etcdClient(config.etcd);
const prefix = `/soak/${process.pid}-${Date.now()}/`;
const stats = { puts: 0, putErrors: 0, watchEvents: 0, missing: 0, outOfOrder: 0, keepalives: 0, keepaliveFailures: 0, leaseLost: 0, watchDisconnects: 0, minRemainingMs: Infinity };

const guarded = await grantGuardedLease(client, 10, () => stats.leaseLost++);
guarded.lease.on("keepaliveSucceeded", () => stats.keepalives++);
guarded.lease.on("keepaliveFailed", () => stats.keepaliveFailures++);
await guarded.lease.put(`${prefix}owner`).value("soak");

let expected = 1;
const watcher = await client.watch().prefix(`${prefix}seq/`).create();
watcher.on("disconnected", () => stats.watchDisconnects++);
watcher.on("put", (kv) => {
  stats.watchEvents++;
  const n = Number(kv.value.toString());
  if (n > expected) stats.missing += n - expected;
  if (n < expected) stats.outOfOrder++;
  expected = Math.max(expected, n + 1);
});

const started = Date.now();
const until = started + minutes * 60_000;
let seq = 0;
let lastReport = started;
while (Date.now() < until) {
  seq++;
  try {
    await client.put(`${prefix}seq/${seq % 100}`).value(String(seq));
    stats.puts++;
  } catch {
    stats.putErrors++;
  }
  stats.minRemainingMs = Math.min(stats.minRemainingMs, guarded.remainingMs());
  if (Date.now() - lastReport > 60_000) {
    lastReport = Date.now();
    console.error(`[soak] ${((Date.now() - started) / 60_000).toFixed(1)} min: ${JSON.stringify(stats)}`);
  }
  await Bun.sleep(100);
}
await Bun.sleep(1_000);
const ownerStillThere = (await client.get(`${prefix}owner`).string()) === "soak";
await watcher.cancel();
await guarded.revoke();
await client.delete().prefix(prefix);
client.close();

const result = { minutes, ...stats, lastSeqSeen: expected - 1, lastSeqPut: seq, ownerKeyHeld: ownerStillThere };
const ok = stats.leaseLost === 0 && stats.keepaliveFailures === 0 && stats.missing === 0 && stats.outOfOrder === 0 && stats.putErrors === 0 && expected - 1 === seq && ownerStillThere;
console.log(JSON.stringify({ ok, ...result }));
console.log(`etcd soak ${ok ? "PASSED" : "FAILED"}: ${minutes} min, ${stats.puts} puts, ${stats.watchEvents} watch events, ${stats.keepalives} keep-alives, ${stats.keepaliveFailures} keep-alive failures, ${stats.leaseLost} lease losses, ${stats.missing} missing events, min lease headroom ${stats.minRemainingMs} ms`);
process.exit(ok ? 0 : 1);
