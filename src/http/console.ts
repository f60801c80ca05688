/**
 * The web console at /console: a static page and its assets, built from src/console by Bun.build
 * in memory the first time a process serves them (no build step, nothing written to disk), and a
 * small config document. The console speaks only the public API, with the caller's token.
 *
 * Asset names carry a content hash and are cached for a year; the page is never cached, so a new
 * deployment is picked up on the next load. The content security policy allows this origin only:
 * no inline script, no third-party code, no framing.
 */
import { join } from "node:path";
import { Elysia } from "elysia";
import type { Config } from "../config.ts";
import { log } from "../log.ts";
import { ApiError } from "./errors.ts";

const ENTRY = join(import.meta.dir, "..", "console", "index.html");
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const SECURITY = { "content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" };

interface Asset { body: Uint8Array; type: string }
let built: Promise<Map<string, Asset>> | null = null;

/** The console's files by name (index.html and its hashed assets), built once per process. */
function assets(): Promise<Map<string, Asset>> {
  built ??= (async () => {
    const started = performance.now();
    const out = await Bun.build({ entrypoints: [ENTRY], minify: true, target: "browser" });
    if (!out.success) throw new AggregateError(out.logs, "the console did not build");
    const files = new Map<string, Asset>();
    for (const o of out.outputs) files.set(o.path.replace(/^\.\//, ""), { body: new Uint8Array(await o.arrayBuffer()), type: o.type });
    log.info("console built", { files: files.size, ms: Math.round(performance.now() - started) });
    return files;
  })().catch((e) => {
    built = null; // the next request tries again
    throw e;
  });
  return built;
}

export function consoleRoutes(config: Config) {
  const settings = { trace_url: config.console.traceUrl };
  const hidden = { detail: { hide: true } };
  const file = async (name: string) => {
    const asset = (await assets()).get(name);
    if (!asset) throw new ApiError(404, "route_not_found", `no console file ${JSON.stringify(name)}`);
    return new Response(asset.body, {
      headers: { ...SECURITY, "content-type": asset.type, "cache-control": name === "index.html" ? "no-cache" : "public, max-age=31536000, immutable" },
    });
  };
  return new Elysia({ name: "console" })
    // One route for both (Elysia matches /console and /console/ alike): the page's asset paths
    // are relative, so it is served at /console/ only.
    .get("/console", ({ request, redirect }) => (new URL(request.url).pathname.endsWith("/") ? file("index.html") : redirect("/console/", 308)), hidden)
    .get("/console/config.json", ({ set }) => {
      set.headers["cache-control"] = "no-cache";
      return settings;
    }, hidden)
    .get("/console/:file", ({ params }) => file(params.file), hidden);
}
