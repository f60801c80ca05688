/** The Prometheus alert rules, unit-tested with promtool (installed by ops/install.sh). */
import { expect, test } from "bun:test";
import { join } from "node:path";

test("promtool: every alert fires when it should and stays quiet otherwise", async () => {
  if (!Bun.which("promtool")) throw new Error("promtool is not installed: run 'bash ops/install.sh' (Debian package prometheus)");
  const dir = join(import.meta.dir, "..", "ops", "prometheus");
  const check = Bun.spawnSync(["promtool", "check", "rules", "alerts.yml"], { cwd: dir });
  expect(check.exitCode).toBe(0);
  const run = Bun.spawnSync(["promtool", "test", "rules", "alerts.test.yml"], { cwd: dir });
  const out = run.stdout.toString() + run.stderr.toString();
  expect(out).toContain("SUCCESS");
  expect(run.exitCode).toBe(0);
});
