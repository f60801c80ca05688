import { IdGenerator } from "./actors/ids.ts";
import { shardOf } from "./actors/shard-map.ts";
import { connect } from "./src/db/databases.ts";
import { freshDatabases } from "./test/support/env.ts";
const { urls, drop } = await freshDatabases(1);
const sql = connect(urls[0]!, 2);
const gen = new IdGenerator(5);
const ids = Array.from({ length: 500 }, () => String(gen.next()));
await sql`INSERT INTO jobs (id, shard_id, user_id, job_weight, message, execute_at, max_attempts, status, started_at, attempt, deadline_at)
    SELECT id, 1, 1, 1, 'x', now(), 3, 'running', now(), 1, now() + interval '1 hour' FROM unnest(${ids}::bigint[]) AS x(id)`;
await sql`ANALYZE jobs`;
const plan = await sql.begin(async (tx) => {
  const r = await tx`EXPLAIN (ANALYZE, BUFFERS) UPDATE jobs j SET
      status = o.status::job_status,
      last_error = coalesce(o.error, j.last_error),
      execute_at = CASE WHEN o.status = 'retrying' THEN now() + o.delay_ms * interval '1 millisecond' ELSE j.execute_at END,
      finished_at = CASE WHEN o.status IN ('succeeded', 'failed') THEN now() END,
      deadline_at = NULL,
      updated_at = now()
    FROM unnest(${ids}::bigint[], ${ids.map(() => 1)}::int[], ${ids.map(() => "succeeded")}::text[], ${ids.map(() => null)}::text[], ${ids.map(() => 0)}::int[])
      AS o(id, attempt, status, error, delay_ms)
    WHERE j.id = ANY(${ids}::bigint[]) AND j.id = o.id AND j.status = 'running' AND j.attempt = o.attempt`;
  throw Object.assign(new Error("rb"), { r });
}).catch((e) => e.r);
console.log(plan.map((x: any) => x["QUERY PLAN"]).join("\n"));
await sql.end(); await drop();
process.exit(0);
