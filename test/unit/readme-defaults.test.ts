/**
 * README's configuration table says what each setting defaults to; this keeps it true (issue 31).
 *
 * For every variable whose default cell is a plain value (`4s`, `8080`, possibly followed by a
 * note in parentheses), the configuration loaded with the variable set to the README's value must
 * equal the configuration loaded without it: src/config.ts parses the value its own way, so no
 * mapping from names to config fields is needed. The variable must also be one that loadConfig
 * reads. The `ops scripts:` row and the "(local cluster: `x`)" notes are checked against the
 * `NAME="${NAME:-default}"` lines of ops/lib.sh and ops/cluster-up.sh. Defaults that are not a
 * plain value are listed in NOT_PLAIN with the reason.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config.ts";

const ROOT = join(import.meta.dir, "..", "..");
const README = readFileSync(join(ROOT, "README.md"), "utf8");
const OPS_SCRIPTS = ["ops/lib.sh", "ops/cluster-up.sh"].map((f) => readFileSync(join(ROOT, f), "utf8")).join("\n");

/** Variables whose README default is not one value, and why. */
const NOT_PLAIN: Record<string, string> = {
  ADMIN_TOKEN: "unset by default (ops/cluster-up.sh makes one)",
  CONSOLE_TRACE_URL: "unset by default",
  SIGNUP_WEIGHTS: "depends on APP_MODE",
  JWT_SECRET: "a random secret in local mode, required in production",
  JWT_PREVIOUS_SECRETS: "unset by default (no previous secrets)",
  HTTP_TARGET_ALLOW_PRIVATE: "depends on APP_MODE",
  TRUSTED_PROXIES: "an empty list",
  OTEL_TRACES_EXPORTER: "depends on whether OTEL_EXPORTER_OTLP_ENDPOINT is set",
};

/**
 * Set in every configuration loaded here: a secret, so that loading one does not make or read
 * .local/local-secret; and the exporter, whose default follows whether OTEL_EXPORTER_OTLP_ENDPOINT
 * is set at all (so setting that one to its own default would change it).
 */
const BASE = { JWT_SECRET: "readme-defaults-test-secret-0123456789", OTEL_TRACES_EXPORTER: "none" };

interface Row {
  names: string[];
  /** Each name's default cell part, in order. */
  defaults: string[];
  /** The `ops scripts:` row: defaults of the shell scripts, not of src/config.ts. */
  ops: boolean;
}

/** Splits at `, ` or `; ` outside backticks and parentheses. */
function splitTopLevel(cell: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let code = false;
  let start = 0;
  for (let i = 0; i < cell.length; i++) {
    const ch = cell[i];
    if (ch === "`") code = !code;
    else if (!code && ch === "(") depth++;
    else if (!code && ch === ")") depth--;
    else if (!code && depth === 0 && (ch === "," || ch === ";") && cell[i + 1] === " ") {
      parts.push(cell.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(cell.slice(start).trim());
  return parts;
}

/** The rows of the table(s) in README's "## Configuration" section. */
function configurationRows(): Row[] {
  const section = README.split(/^## /m).find((s) => s.startsWith("Configuration\n"));
  if (!section) throw new Error("README.md has no '## Configuration' section");
  const rows: Row[] = [];
  for (const line of section.split("\n")) {
    if (!line.startsWith("|") || line.startsWith("| variable") || line.startsWith("| ---")) continue;
    const cells = line.split("|").slice(1, -1).map((c) => c.trim());
    if (cells.length !== 3) throw new Error(`cannot read this row (expected 3 cells): ${line}`);
    const [nameCell, defaultCell] = cells as [string, string, string];
    const names = [...nameCell.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]!);
    const defaults = names.length > 1 ? splitTopLevel(defaultCell) : [defaultCell.trim()];
    if (names.length === 0 || defaults.length !== names.length) {
      throw new Error(`cannot tell which default is whose (${names.length} names, ${defaults.length} defaults): ${line}`);
    }
    rows.push({ names, defaults, ops: nameCell.startsWith("ops scripts:") });
  }
  return rows;
}

/** A plain default: one backticked value, optionally followed by a note in parentheses. */
function plain(cell: string): { value: string; note: string } | null {
  const m = /^`([^`]*)`(?:\s*\((.*)\))?$/.exec(cell);
  return m ? { value: m[1]!, note: m[2] ?? "" } : null;
}

/** The default an ops script gives a variable (`NAME="${NAME:-value}"`), or null. */
function scriptDefault(name: string): string | null {
  return new RegExp(`\\b${name}="\\$\\{${name}:-([^}]*)\\}"`).exec(OPS_SCRIPTS)?.[1] ?? null;
}

const rows = configurationRows();
const entries = rows.flatMap((r) => r.names.map((name, i) => ({ name, cell: r.defaults[i]!, ops: r.ops })));

describe("README's configuration table", () => {
  test("is read: every documented variable, each once", () => {
    expect(entries.length).toBeGreaterThan(60);
    const names = entries.map((e) => e.name);
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
  });

  test("every plain default is what src/config.ts uses when the variable is not set", () => {
    const read = new Set<string>();
    const watched = new Proxy(BASE as Record<string, string | undefined>, {
      get: (env, key) => {
        if (typeof key === "string") read.add(key);
        return env[key as string];
      },
    });
    const defaults = loadConfig(watched);
    const wrong: string[] = [];
    let checked = 0;
    for (const { name, cell, ops } of entries) {
      const p = plain(cell);
      if (ops || !p) continue;
      checked++;
      if (!read.has(name)) {
        wrong.push(`${name}: documented, but src/config.ts never reads it`);
        continue;
      }
      try {
        if (!Bun.deepEquals(loadConfig({ ...BASE, [name]: p.value }), defaults)) wrong.push(`${name}: README says \`${p.value}\`, src/config.ts defaults to something else`);
      } catch (e) {
        wrong.push(`${name}: README's \`${p.value}\` is refused: ${(e as Error).message}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(checked).toBeGreaterThan(50);
  });

  test("the ops scripts' defaults and the local cluster's values are the scripts' own", () => {
    const wrong: string[] = [];
    for (const { name, cell, ops } of entries) {
      const p = plain(cell);
      if (!p) continue;
      const local = /local cluster: `([^`]*)`/.exec(p.note)?.[1];
      const want = ops ? p.value : local;
      if (want === undefined) continue;
      const got = scriptDefault(name);
      if (got !== want) wrong.push(`${name}: README says \`${want}\`${ops ? "" : " for the local cluster"}, the ops scripts use ${got === null ? "no default" : `\`${got}\``}`);
    }
    expect(wrong).toEqual([]);
  });

  test("the defaults that are not a plain value are exactly the listed ones", () => {
    const notPlain = entries.filter((e) => plain(e.cell) === null).map((e) => e.name).sort();
    expect(notPlain).toEqual(Object.keys(NOT_PLAIN).sort());
  });
});
