/**
 * The `postgres` client as patched in ops/patches (applied by `bun install`): a write on a
 * connection whose backend died fails the query with a catchable error instead of killing the
 * process (porsager/postgres#1208; a PostgreSQL restart used to kill the scheduler).
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { PG_BASE, requireService } from "./support/env.ts";

test("a reserved connection whose backend was terminated rejects its queries; the process and the pool live on", async () => {
  await requireService("postgresql");
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "support", "pg-closed-write.ts"), `${PG_BASE}/postgres`], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  expect(err).not.toContain("socket.write");
  expect(code).toBe(0);
  const result = JSON.parse(out.trim().split("\n").at(-1)!);
  expect(result.survived).toBe(true);
  expect(result.outcomes.every((o: string) => o !== "ok")).toBe(true);
  expect(result.after).toBe(1);
});
