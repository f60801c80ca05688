/**
 * Run as a child process by test/pg-client.test.ts: a reserved connection whose backend is
 * terminated, then small queries on it (their writes are deferred to setImmediate). Unpatched,
 * postgres 3.4.x throws from that callback (`socket.write` on null) and the process dies; with
 * ops/patches the queries fail with a catchable error and this prints "survived".
 */
import postgres from "postgres";

const url = process.argv[2]!;
const sql = postgres(url, { max: 2, onnotice: () => {} });
const conn = await sql.reserve();
const [{ pid }] = (await conn`SELECT pg_backend_pid() AS pid`) as unknown as [{ pid: number }];
await sql`SELECT pg_terminate_backend(${pid})`;
const outcomes: string[] = [];
for (let i = 0; i < 5; i++) {
  try {
    await conn`SELECT 1`;
    outcomes.push("ok");
  } catch (e) {
    outcomes.push((e as { code?: string }).code ?? "error");
  }
  await Bun.sleep(20);
}
conn.release();
// The pool still serves new work afterwards.
const [{ n }] = (await sql`SELECT 1 AS n`) as unknown as [{ n: number }];
console.log(JSON.stringify({ survived: true, outcomes, after: n }));
await sql.end({ timeout: 1 });
