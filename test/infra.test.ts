/** The foundation against the real services: Kafka (kafkajs), etcd (etcd3), PostgreSQL migrations. */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect } from "../src/db/databases.ts";
import { migrate, readMigrations, SchemaTooNewError } from "../src/db/migrate.ts";
import { etcdClient, grantGuardedLease } from "../src/etcd.ts";
import { KafkaBus } from "../src/kafka.ts";
import { freshDatabases, requireService, testConfig, uniqueName } from "./support/env.ts";

// Real services: allow for broker rebalances and lease expiry on a loaded 2-core machine.
setDefaultTimeout(60_000);

describe("kafka", () => {
  test("kafkajs round trip: explicit topic, idempotent producer, consumer group with manual commits", async () => {
    await requireService("kafka");
    const topic = uniqueName("t_roundtrip");
    const config = testConfig({ KAFKA_PARTITIONS: "3" });
    const bus = new KafkaBus(config.kafka);
    await bus.ensureTopics([topic]);
    await bus.ensureTopics([topic]); // idempotent
    expect((await bus.topicOffsets(topic)).length).toBe(3);

    const publisher = await bus.publisher();
    const sent = Array.from({ length: 2_000 }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ n: i }), headers: { traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-01` } }));
    // Publishes under way at once share requests; each still learns where its messages landed.
    const placements = (await Promise.all(Array.from({ length: 4 }, (_, k) => publisher.publish(topic, sent.slice(k * 500, (k + 1) * 500))))).flat();
    expect(new Set(placements.map((p) => p.partition))).toEqual(new Set([0, 1, 2])); // in turn over the partitions

    const seen = new Map<number, number>();
    let headersOk = true;
    let placedOk = true;
    const done = Promise.withResolvers<void>();
    const group = uniqueName("g");
    const last = new Map<number, number>();
    const sub = await bus.subscribe(group, topic, {
      onBatch: async ({ partition, messages }) => {
        for (const m of messages) {
          const n = JSON.parse(m.value).n as number;
          seen.set(n, (seen.get(n) ?? 0) + 1);
          headersOk &&= m.headers.traceparent === sent[n]!.headers.traceparent && m.key === `k${n}`;
          placedOk &&= placements[n]!.partition === partition && placements[n]!.offset === Number(m.offset);
          last.set(partition, Number(m.offset) + 1);
        }
        if (seen.size === sent.length) done.resolve();
        return messages.at(-1)?.offset ?? null;
      },
    });
    await Promise.race([done.promise, Bun.sleep(45_000)]);
    // A commit carries a note per partition (the executors' measured wait) that readers see.
    await sub.commit(new Map([...last].map(([p, next]) => [p, { next, metadata: `${p}7` }])));
    const reader = await bus.offsetReader(group, topic);
    expect(await reader.read()).toEqual(new Map([...last].map(([p, next]) => [p, { next, metadata: `${p}7` }])));
    await reader.close();
    await sub.stop();
    await publisher.close();
    expect(seen.size).toBe(2_000);
    expect([...seen.values()].every((c) => c === 1)).toBe(true);
    expect(headersOk).toBe(true);
    expect(placedOk).toBe(true);
  });
});

describe("etcd", () => {
  test("etcd3 put/get, lease-attached keys, watch events and create-if-absent transactions", async () => {
    await requireService("etcd");
    const config = testConfig({});
    const client = etcdClient(config.etcd);
    const prefix = `/${uniqueName("infra")}/`;
    try {
      await client.put(`${prefix}plain`).value("v1");
      expect(await client.get(`${prefix}plain`).string()).toBe("v1");

      const events: string[] = [];
      const watcher = await client.watch().prefix(prefix).create();
      watcher.on("put", (kv) => events.push(`put ${kv.key.toString().slice(prefix.length)}`));
      watcher.on("delete", (kv) => events.push(`delete ${kv.key.toString().slice(prefix.length)}`));

      let lost = false;
      const lease = await grantGuardedLease(client, 4, () => (lost = true));
      await lease.lease.put(`${prefix}leased`).value("mine");
      const first = await client.if(`${prefix}owned`, "Create", "==", 0).then(client.put(`${prefix}owned`).value("a").lease(lease.id)).commit();
      const second = await client.if(`${prefix}owned`, "Create", "==", 0).then(client.put(`${prefix}owned`).value("b")).commit();
      expect(first.succeeded).toBe(true);
      expect(second.succeeded).toBe(false);
      expect(await client.get(`${prefix}owned`).string()).toBe("a");

      // Keep-alives hold the lease past its TTL...
      await Bun.sleep(5_000);
      expect(lost).toBe(false);
      expect(await client.get(`${prefix}leased`).string()).toBe("mine");
      // ...and revoking it deletes every key attached to it.
      await lease.revoke();
      await Bun.sleep(300);
      expect(await client.get(`${prefix}leased`).string()).toBeNull();
      expect(await client.get(`${prefix}owned`).string()).toBeNull();
      expect(events).toEqual(["put leased", "put owned", "delete leased", "delete owned"].sort((a, b) => events.indexOf(a) - events.indexOf(b)));
      expect(events.filter((e) => e.startsWith("delete")).sort()).toEqual(["delete leased", "delete owned"]);
      await watcher.cancel();
    } finally {
      await client.delete().prefix(prefix);
      client.close();
    }
  });
});

describe("migrations", () => {
  test("applied to two databases, concurrently from several runners, and safe to re-run", async () => {
    const { urls, drop } = await freshDatabases(2, { migrate: false });
    const all = readMigrations().map((m) => m.version);
    try {
      for (const url of urls) {
        // Four runners at once, each with its own connection: exactly one applies each migration.
        const sqls = Array.from({ length: 4 }, () => connect(url, 1));
        const results = await Promise.all(sqls.map((s) => migrate(s)));
        expect(results.flat().sort((a, b) => a - b)).toEqual(all);
        expect(await migrate(sqls[0]!)).toEqual([]);
        const rows = await sqls[0]!`SELECT version FROM schema_migrations ORDER BY version`;
        expect(rows.map((r) => r.version)).toEqual(all);
        const tables = await sqls[0]!`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`;
        expect(tables.map((t) => t.table_name)).toEqual(["all_jobs", "cluster_settings", "dead_letter_outbox", "executor_slots", "id_nodes", "idempotency_keys", "job_attempts", "job_batches", "job_history", "jobs", "scheduler_demand", "schema_migrations", "shard_fences", "staged_jobs", "target_calendar", "target_leases", "target_limits", "users"]);
        await Promise.all(sqls.map((s) => s.end()));
      }
    } finally {
      await drop();
    }
  });

  test("a database migrated by newer code is refused, and nothing is applied", async () => {
    const { urls, drop } = await freshDatabases(1);
    const sql = connect(urls[0]!, 1);
    try {
      const newest = readMigrations().at(-1)!.version;
      await sql`INSERT INTO schema_migrations (version, name) VALUES (${newest + 1}, 'from_the_future')`;
      const err = await migrate(sql).catch((e) => e);
      expect(err).toBeInstanceOf(SchemaTooNewError);
      expect(err.message).toContain(`migration ${newest + 1}, newer than this code's ${newest}`);
    } finally {
      await sql.end();
      await drop();
    }
  });

  test("the jobs table enforces its state invariants", async () => {
    const { urls, drop } = await freshDatabases(1);
    const sql = connect(urls[0]!, 1);
    try {
      const insert = (extra: string) =>
        sql.unsafe(`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts ${extra ? "," + extra.split("=")[0] : ""})
                    VALUES (${Math.floor(Math.random() * 1e9)}, 0, 1, 'm', now(), now(), 3 ${extra ? "," + extra.split("=")[1] : ""})`);
      await insert("");
      await expect(insert("status='succeeded'")).rejects.toThrow(/finished_iff_terminal/);
      await expect(insert("status='running'")).rejects.toThrow(/running_has_started|deadline_iff_in_flight/);
      await expect(insert("attempt=4")).rejects.toThrow(/attempts_within_limit/);
      await expect(insert("status='lost'")).rejects.toThrow(/invalid input value for enum/);
    } finally {
      await sql.end();
      await drop();
    }
  });
});

describe("process", () => {
  test("a bad configuration stops the process with exit 2 and names the variable", async () => {
    const proc = Bun.spawn(["bun", "src/main.ts", "api"], {
      env: { PATH: process.env.PATH ?? "", SHARD_COUNT: "zero", KAFKA_BROKERS: "localhost" },
      stderr: "pipe",
      stdout: "pipe",
    });
    const code = await proc.exited;
    const err = await new Response(proc.stderr).text();
    expect(code).toBe(2);
    expect(err).toContain("SHARD_COUNT");
    expect(err).toContain("KAFKA_BROKERS");
    const bad = Bun.spawn(["bun", "src/main.ts", "worker"], { env: { PATH: process.env.PATH ?? "" }, stderr: "pipe" });
    expect(await bad.exited).toBe(2);
    expect(await new Response(bad.stderr).text()).toContain("expected one of api, scheduler, executor, all");
  });
});
