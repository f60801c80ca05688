/** The Prometheus alert rules, unit-tested with promtool (installed by ops/install.sh), and the Prometheus config. */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

const dir = join(import.meta.dir, "..", "ops", "prometheus");

function promtool(...args: string[]) {
  if (!Bun.which("promtool")) throw new Error("promtool is not installed: run 'bash ops/install.sh' (Debian package prometheus)");
  const run = Bun.spawnSync(["promtool", ...args], { cwd: dir });
  return { exitCode: run.exitCode, out: run.stdout.toString() + run.stderr.toString() };
}

test("promtool: every alert fires when it should and stays quiet otherwise", async () => {
  const check = promtool("check", "rules", "alerts.yml");
  expect(check.exitCode, check.out).toBe(0);
  const run = promtool("test", "rules", "alerts.test.yml");
  expect(run.out).toContain("SUCCESS");
  expect(run.exitCode, run.out).toBe(0);
});

test("promtool: the Prometheus config is valid and its rule files resolve", () => {
  const check = promtool("check", "config", "prometheus.yml");
  expect(check.out).toContain("SUCCESS: 1 rule files found");
  expect(check.exitCode, check.out).toBe(0);
});

test("every role Prometheus discovers has a RoleAbsent rule and a RoleDown rule for its job", () => {
  const config = parse(readFileSync(join(dir, "prometheus.yml"), "utf8"));
  const rules = parse(readFileSync(join(dir, "alerts.yml"), "utf8")).groups.flatMap((g: any) => g.rules);
  const exprs = (alert: string): string[] => rules.filter((r: any) => r.alert === alert).map((r: any) => r.expr.replace(/\s+/g, ""));
  let roles = 0;
  for (const job of config.scrape_configs) {
    // `role` is the DNS name a target came from (relabel_configs).
    expect(job.relabel_configs).toContainEqual({ source_labels: ["__meta_dns_name"], target_label: "role" });
    for (const role of job.dns_sd_configs.flatMap((d: any) => d.names)) {
      expect(exprs("RoleAbsent"), `${job.job_name}/${role}`).toContain(`absent(up{job="${job.job_name}",role="${role}"})`);
      roles++;
    }
    expect(exprs("RoleDown")).toContain(`up{job="${job.job_name}"}==0`);
  }
  expect(roles).toBe(3);
});
