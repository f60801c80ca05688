/**
 * Liveness, readiness and metrics, served by every role on its HTTP port.
 * /healthz: the process is up. /readyz: every component reports ready (503 with the list of
 * those that are not, e.g. while starting or draining). /metrics: Prometheus text.
 */
import { Elysia } from "elysia";
import { registry, renderMetrics } from "../metrics.ts";

export interface Readiness {
  name: string;
  ready(): boolean;
}

export function healthRoutes(components: () => Readiness[]) {
  return new Elysia({ name: "health" })
    .get("/healthz", () => ({ data: { status: "ok" }, success: true }))
    .get("/readyz", ({ set }) => {
      const waiting = components().filter((c) => !c.ready()).map((c) => c.name);
      if (waiting.length > 0) {
        set.status = 503;
        return { success: false, error: { code: "not_ready", message: `not ready: ${waiting.join(", ")}`, details: { waiting } } };
      }
      return { data: { status: "ready", components: components().map((c) => c.name) }, success: true };
    })
    .get("/metrics", async ({ set }) => {
      set.headers["content-type"] = registry.contentType;
      return await renderMetrics();
    });
}
