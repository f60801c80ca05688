/**
 * compose.yaml, ops/Dockerfile and the ops/ observability files are checked without Docker:
 * every service they reference exists, every file they mount is in the repository, the roles'
 * environment (the image's and compose's) passes the real configuration validator, only the API
 * and the UIs are published and on 127.0.0.1 by default, secrets come from required variables,
 * stateful services keep their data in volumes, roles get the time to drain, and alerts have
 * somewhere to go. (test/observability.test.ts checks that every metric named in alerts and
 * dashboards is one the processes export.)
 */
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { ConfigError, loadConfig, parseDuration, ROLES } from "../src/config.ts";

const ROOT = join(import.meta.dir, "..");
const composeText = readFileSync(join(ROOT, "compose.yaml"), "utf8");
// Compose files use YAML merge keys (<<: *role).
const compose = parse(composeText, { merge: true });
const services: Record<string, any> = compose.services;
const prometheus = parse(readFileSync(join(ROOT, "ops/prometheus/prometheus.yml"), "utf8"));
const alertmanagerConfig = parse(readFileSync(join(ROOT, "ops/alertmanager/alertmanager.yml"), "utf8"));

const ROLE_SERVICES = ["api", "scheduler", "executor"];
/** The services a person opens in a browser, the only ones that may publish a port, and their UI's port (the API's: PORT). */
const PUBLISHED: Record<string, number | "PORT"> = { api: "PORT", jaeger: 16686, prometheus: 9090, alertmanager: 9093, grafana: 3000 };
/** Where each stateful service keeps its data (in the container). */
const DATA_DIRS: Record<string, string> = {
  postgres: "/var/lib/postgresql/data",
  redpanda: "/var/lib/redpanda/data",
  etcd: "/etcd-data",
  prometheus: "/prometheus",
  alertmanager: "/alertmanager",
  grafana: "/var/lib/grafana",
};
/** Compose variables holding secrets: each must be required (`${VAR:?message}`), never defaulted. */
const SECRET_VARIABLES = ["POSTGRES_PASSWORD", "JWT_SECRET", "ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD"];

/** The ENV instructions of the roles' image (KEY=VALUE pairs; line continuations joined). */
function imageEnv(): Record<string, string> {
  const svc = services.api;
  const text = readFileSync(join(ROOT, svc.build.context, svc.build.dockerfile), "utf8").replace(/\\\n/g, " ");
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*ENV\s+(.*)$/i.exec(line);
    if (!m) continue;
    const pairs = [...m[1]!.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)];
    if (pairs.length === 0) {
      const [key, ...rest] = m[1]!.trim().split(/\s+/); // legacy `ENV KEY value`
      env[key!] = rest.join(" ");
    }
    for (const [, key, value] of pairs) env[key!] = value!.startsWith('"') ? JSON.parse(value!) : value!;
  }
  return env;
}

/** Compose interpolation as the operator's run would see it: `${X:-d}` takes d, a required `${X:?m}` a random value. */
const interpolate = (v: string) =>
  v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*)|:\?[^}]*)\}/g, (_, _name, def) => def ?? randomBytes(24).toString("hex"));

/** A role's environment in its container: the image's, then compose's. */
function roleEnv(name: string): Record<string, string> {
  const env: Record<string, string> = { ...imageEnv() };
  for (const [k, v] of Object.entries<string>(services[name].environment ?? {})) env[k] = interpolate(String(v));
  return env;
}

/** A compose port: short syntax (`[ip:]host:container[/proto]`, the ip possibly `${VAR:-default}`) or long. */
function parsePort(p: unknown): { ip: string | null; host: string | null; container: number } {
  if (typeof p === "object" && p !== null) {
    const o = p as { host_ip?: string; published?: string | number; target: number };
    return { ip: o.host_ip ?? null, host: o.published === undefined ? null : String(o.published), container: Number(o.target) };
  }
  let s = String(p).replace(/\/(tcp|udp)$/, "");
  let ip: string | null = null;
  const variable = /^(\$\{[^}]*\}):/.exec(s);
  if (variable) {
    ip = variable[1]!;
    s = s.slice(variable[0].length);
  }
  const parts = s.split(":");
  if (parts.length === 3) ip = parts.shift()!;
  const container = Number(parts.pop());
  return { ip, host: parts[0] ?? null, container };
}

/** A Compose (Go) duration: `30s`, `1m30s`, `1h`, `500ms`. */
function composeDurationMs(s: string): number {
  const parts = [...String(s).matchAll(/(\d+(?:\.\d+)?)(ms|us|s|m|h)/g)];
  expect(parts.map((m) => m[0]).join(""), `duration ${s}`).toBe(String(s));
  const unit = { us: 0.001, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
  return parts.reduce((sum, m) => sum + Number(m[1]) * unit[m[2] as keyof typeof unit], 0);
}

describe("compose.yaml", () => {
  test("has the services the architecture names", () => {
    for (const name of ["redpanda", "postgres", "etcd", "jaeger", "prometheus", "alertmanager", "grafana", "api", "scheduler", "executor"]) {
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
        const { host, container } = parsePort(p);
        expect(Number(host)).toBeWithin(1, 65536);
        expect(container).toBeWithin(1, 65536);
        expect(published.has(String(host))).toBe(false);
        published.add(String(host));
      }
    }
  });

  test("only the API and the UIs publish ports, each its UI's only; nothing shares the host's network", () => {
    for (const [name, svc] of Object.entries(services)) {
      expect(svc.network_mode, `${name} network_mode`).toBeUndefined();
      const published = (svc.ports ?? []).map((p: unknown) => parsePort(p).container);
      const ui = PUBLISHED[name];
      // Not Jaeger's OTLP receiver, not a database: the roles reach those on the compose network.
      if (ui === undefined) expect(published, `${name} publishes ports`).toEqual([]);
      else expect(published.filter((p: number) => p !== (ui === "PORT" ? loadConfig(roleEnv(name)).port : ui)), `${name} publishes more than its UI`).toEqual([]);
    }
    expect(services.api.ports).toHaveLength(1);
  });

  test("every published port binds to a variable defaulting to 127.0.0.1", () => {
    const ips = new Set<string>();
    for (const [name, svc] of Object.entries(services)) {
      for (const p of svc.ports ?? []) {
        const { ip, host } = parsePort(p);
        expect(ip, `${name}: ${JSON.stringify(p)} binds every interface`).toMatch(/^\$\{[A-Z_][A-Z0-9_]*:-127\.0\.0\.1\}$/);
        expect(host, `${name}: ${JSON.stringify(p)} needs a fixed host port`).toMatch(/^\d+$/);
        ips.add(ip!);
      }
    }
    // One variable moves them all.
    expect(ips.size).toBe(1);
  });

  test("secrets come from required variables, never from defaults or literals", () => {
    const required = (name: string) => new RegExp(`^\\$\\{${name}:\\?[^}]+\\}$`);
    expect(String(services.postgres.environment.POSTGRES_PASSWORD)).toMatch(required("POSTGRES_PASSWORD"));
    expect(String(services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD)).toMatch(required("GRAFANA_ADMIN_PASSWORD"));
    for (const name of ROLE_SERVICES) {
      const env = services[name].environment;
      expect(String(env.JWT_SECRET), name).toMatch(required("JWT_SECRET"));
      expect(String(env.ADMIN_TOKEN), name).toMatch(required("ADMIN_TOKEN"));
      // The URL's password is the database's: postgres://user:${POSTGRES_PASSWORD:?...}@host/db.
      expect(String(env.DATABASE_URLS), name).toMatch(/^postgres:\/\/[^:/@]+:\$\{POSTGRES_PASSWORD:\?[^}]+\}@/);
    }
    // Nowhere a secret with a default value (`${JWT_SECRET:-...}`, `${X-...}`) or unchecked (`$X`, `${X}`).
    for (const v of SECRET_VARIABLES) {
      for (const m of composeText.matchAll(new RegExp(`\\$\\{?${v}(\\}|[^A-Z0-9_:]|:[^?]|$)`, "g"))) {
        throw new Error(`compose.yaml uses ${v} without requiring it: ${m[0]}`);
      }
    }
  });

  test("the roles' environment passes the configuration validator and names a known role", () => {
    for (const name of ROLE_SERVICES) {
      const svc = services[name];
      expect(ROLES).toContain(svc.command[0]);
      const config = loadConfig(roleEnv(name));
      expect(config.mode).toBe("production");
      expect(config.kafka.brokers).toEqual(["redpanda:9092"]);
      expect(config.databaseUrls).toHaveLength(1);
      expect(config.databaseUrls[0]).toMatch(/@postgres:5432\/fairshare$/);
    }
  });

  test("the image runs in production mode: `docker run IMAGE api` without secrets refuses to start", () => {
    expect(imageEnv().APP_MODE).toBe("production");
    let error: unknown;
    try {
      loadConfig(imageEnv());
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems.join("\n")).toContain("JWT_SECRET: required when APP_MODE=production");
  });

  test("every role has a stop_grace_period longer than its SHUTDOWN_TIMEOUT (20 s by default)", () => {
    const defaultTimeoutMs = loadConfig({ ...roleEnv("api"), SHUTDOWN_TIMEOUT: undefined } as Record<string, string | undefined>).shutdownTimeoutMs;
    expect(defaultTimeoutMs).toBe(parseDuration("20s")!);
    for (const name of ROLE_SERVICES) {
      const svc = services[name];
      expect(svc.stop_grace_period, `${name} stop_grace_period`).toBeDefined();
      const graceMs = composeDurationMs(svc.stop_grace_period);
      const timeoutMs = loadConfig(roleEnv(name)).shutdownTimeoutMs;
      // A margin for the last log lines and the process's exit after its own timer fired.
      expect(graceMs, name).toBeGreaterThanOrEqual(Math.max(timeoutMs, defaultTimeoutMs) + 5_000);
    }
  });

  test("every role's health check asks its /readyz on the port it listens on", () => {
    for (const name of ROLE_SERVICES) {
      const config = loadConfig(roleEnv(name));
      expect(["0.0.0.0", "127.0.0.1", "::"]).toContain(config.host);
      const check = services[name].healthcheck;
      expect(check, name).toBeDefined();
      expect(check.test[0]).toBe("CMD");
      expect(check.test.slice(1, 3)).toEqual(["bun", "-e"]);
      expect(check.test.join(" ")).toContain(`http://127.0.0.1:${config.port}/readyz`);
    }
  });

  test("every stateful service keeps its data in a named volume", () => {
    for (const [name, dir] of Object.entries(DATA_DIRS)) {
      const mounts = (services[name]?.volumes ?? []).map((v: unknown) => String(v).split(":"));
      const named = mounts.find(([src, target]: string[]) => target === dir && !src!.startsWith(".") && !src!.startsWith("/"));
      expect(named, `${name}: no named volume at ${dir}`).toBeDefined();
      expect(compose.volumes?.[named![0]!] !== undefined, `${name}: volume ${named![0]} not declared`).toBe(true);
    }
    // The directories are the ones the services are told to use.
    expect(services.etcd.command.join(" ")).toContain(`--data-dir ${DATA_DIRS.etcd}`);
    expect(services.prometheus.command).toContain(`--storage.tsdb.path=${DATA_DIRS.prometheus}`);
    expect(services.alertmanager.command).toContain(`--storage.path=${DATA_DIRS.alertmanager}`);
  });

  test("the roles sample traces: parent-based, 1 % of the API's requests", () => {
    for (const name of ROLE_SERVICES) {
      const env = services[name].environment;
      expect(env.OTEL_TRACES_SAMPLER, name).toBe("parentbased_traceidratio");
      expect(String(env.OTEL_TRACES_SAMPLER_ARG), name).toBe("0.01");
      // The names the code reads (src/config.ts), not near misses.
      const config = loadConfig(roleEnv(name));
      expect(config.otel.sampler).toBe("parentbased_traceidratio");
      expect(config.otel.samplerRatio).toBe(0.01);
    }
  });

  test("alerts go somewhere: Prometheus sends to Alertmanager, which has a receiver", () => {
    const am = services.alertmanager;
    expect(am).toBeDefined();
    // Prometheus's alerting section names the alertmanager service on its port.
    const listen = /--web\.listen-address=\S*:(\d+)/.exec((am.command ?? []).join(" "));
    const amPort = listen ? listen[1] : "9093";
    const targets = (prometheus.alerting?.alertmanagers ?? []).flatMap((a: any) => (a.static_configs ?? []).flatMap((s: any) => s.targets));
    expect(targets).toContain(`alertmanager:${amPort}`);
    // Alertmanager reads the repository's config...
    const configFlag = /--config\.file=(\S+)/.exec((am.command ?? []).join(" "))?.[1] ?? "/etc/alertmanager/alertmanager.yml";
    expect(am.volumes.map(String)).toContain(`./ops/alertmanager/alertmanager.yml:${configFlag}:ro`);
    // ...whose route ends at a defined receiver with a notifier.
    const receivers = new Map<string, any>(alertmanagerConfig.receivers.map((r: any) => [r.name, r]));
    const routeReceivers = [alertmanagerConfig.route.receiver, ...(alertmanagerConfig.route.routes ?? []).map((r: any) => r.receiver).filter(Boolean)];
    for (const r of routeReceivers) {
      expect(receivers.has(r), `receiver ${r}`).toBe(true);
      expect(Object.keys(receivers.get(r)).some((k) => k.endsWith("_configs")), `receiver ${r} sends nothing`).toBe(true);
    }
    // The webhook's URL is a secret file compose fills from ALERT_WEBHOOK_URL (unset: compose refuses to start it).
    const hooks = [...receivers.values()].flatMap((r) => r.webhook_configs ?? []);
    expect(hooks.length).toBeGreaterThan(0);
    for (const h of hooks) {
      expect(h.url, "the URL goes in url_file, not in the repository").toBeUndefined();
      const secret = /^\/run\/secrets\/([a-z0-9_-]+)$/.exec(h.url_file)?.[1];
      expect(secret, h.url_file).toBeDefined();
      expect(am.secrets).toContain(secret);
      expect(compose.secrets?.[secret!]).toEqual({ environment: "ALERT_WEBHOOK_URL" });
    }
  });

  test("Prometheus finds its rule files where compose mounts them", () => {
    const configFlag = /--config\.file=(\S+)/.exec(services.prometheus.command.join(" "))![1]!;
    const configDir = configFlag.slice(0, configFlag.lastIndexOf("/"));
    const mounts = new Map<string, string>(services.prometheus.volumes.map(String).map((v: string) => [v.split(":")[1]!, v.split(":")[0]!]));
    expect(mounts.get(configFlag)).toBe("./ops/prometheus/prometheus.yml");
    expect(prometheus.rule_files.length).toBeGreaterThan(0);
    for (const f of prometheus.rule_files as string[]) {
      const inContainer = f.startsWith("/") ? f : `${configDir}/${f}`;
      const source = mounts.get(inContainer);
      expect(source, `rule file ${inContainer} is not mounted`).toBeDefined();
      expect(existsSync(join(ROOT, source!)), source).toBe(true);
    }
  });
});
