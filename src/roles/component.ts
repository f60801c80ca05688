import type { Readiness } from "../http/health.ts";

/** A long-running part of a process (API, scheduler, executor) that can drain and stop. */
export interface Component extends Readiness {
  /** Stops taking work, finishes or hands back in-flight work, releases what it holds. */
  stop(): Promise<void>;
}
