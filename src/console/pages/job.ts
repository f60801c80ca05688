/**
 * One job: its fields, its attempts, its trace (when the console is configured with a trace
 * UI), and what can be done to it now: cancel before it starts, retry once it failed, reschedule
 * while it waits. Refreshed every 2 seconds (a finished job can be retried from elsewhere).
 */
import { IN_FLIGHT, TRANSITIONS, WAITING } from "../../jobs/lifecycle.ts";
import { call, words, type Attempt, type Job, type One } from "../api.ts";
import { alertLine, fill, h, poll, statusBadge, time, toLocalInput, zone } from "../dom.ts";
import { Form } from "../form.ts";
import { say, type Page } from "../shell.ts";

let settings: Promise<{ trace_url: string | null }> | null = null;
const consoleSettings = () =>
  (settings ??= fetch("config.json").then((r) => r.json()).catch(() => {
    settings = null;
    return { trace_url: null };
  }));

/** What the user may do to a job in each status: the API's own transitions (src/jobs/lifecycle.ts). */
const can = (t: "cancel" | "retry" | "reschedule", status: string) => (TRANSITIONS[t].from as readonly string[]).includes(status);
/** Statuses a job leaves by itself: its page keeps refreshing while in one. */
const CHANGING = new Set<string>([...WAITING, ...IN_FLIGHT]);

export const jobPage: Page = (main, route) => {
  const id = route.path[1]!;
  const path = `/api/v1/me/jobs/${encodeURIComponent(id)}`;
  const heading = h("h1", null, `Job ${id}`);
  const error = alertLine();
  const fields = h("dl", { class: "fields" });
  const actions = h("div", { class: "bar" });
  const attempts = h("tbody");
  const live = h("span", { class: "live" });
  main.append(
    h("p", null, h("a", { href: "#/jobs" }, "All jobs")),
    heading,
    error.el,
    h("div", { class: "bar" }, live),
    fields,
    h("h2", null, "Actions"),
    actions,
    h("h2", null, "Attempts"),
    h(
      "table",
      null,
      h("caption", { class: "visually-hidden" }, "Attempts, first to last"),
      h("thead", null, h("tr", null, ["#", "Outcome", "Started", "Finished", "Duration", "HTTP", "Error"].map((c) => h("th", { scope: "col" }, c)))),
      attempts,
    ),
  );

  let shownStatus = "";
  const act = async (what: string, run: () => Promise<unknown>) => {
    try {
      await run();
      say(what);
      await refresh();
    } catch (e) {
      error.show(words(e));
    }
  };

  const renderActions = (job: Job) => {
    if (job.status === shownStatus) return; // keep a half-typed reschedule time
    shownStatus = job.status;
    fill(actions);
    if (can("cancel", job.status)) {
      actions.append(h("button", { type: "button", class: "danger", onclick: () => act("The job is cancelled.", () => call("POST", `${path}/cancel`)) }, "Cancel job"));
    }
    if (can("retry", job.status)) {
      actions.append(h("button", { type: "button", class: "primary", onclick: () => act("The job will be retried now.", () => call("POST", `${path}/retry`)) }, "Retry job"));
    }
    if (can("reschedule", job.status)) {
      const at = h("input", { type: "datetime-local", step: "1", value: toLocalInput(new Date(job.next_attempt_at ?? job.execute_at)) });
      const form: Form = new Form({ class: "inline", label: "Reschedule" }, async () => {
        const when = new Date(at.value);
        if (Number.isNaN(when.getTime())) throw new Error("Choose a date and time.");
        await call("PATCH", path, { body: { execute_at: when.toISOString() } });
        shownStatus = "";
        say(`The job now runs at ${when.toLocaleString()} (${when.toISOString()} UTC).`);
        await refresh();
      });
      form.el.append(form.field("/execute_at", `Run at (${zone})`, at), h("button", { type: "submit" }, "Reschedule"), form.errorLine());
      actions.append(form.el);
    }
    if (!actions.childElementCount) actions.append(h("p", { class: "hint" }, `Nothing can be done to a ${job.status} job.`));
  };

  const refresh = async (): Promise<void> => {
    try {
      const [job, tries, cfg] = await Promise.all([
        call<One<Job>>("GET", path).then((r) => r.data),
        call<{ data: Attempt[] }>("GET", `${path}/attempts`).then((r) => r.data),
        consoleSettings(),
      ]);
      const row = (k: string, v: Node | string | null) => [h("dt", null, k), h("dd", null, v ?? "-")];
      fill(
        fields,
        row("Status", statusBadge(job.status)),
        row("Kind", job.kind),
        row("Priority", job.priority),
        row("Message", h("pre", null, job.message)),
        row("Execute at", time(job.execute_at)),
        job.next_attempt_at ? row("Next attempt at", time(job.next_attempt_at)) : null,
        row("Attempts", `${job.attempt} of ${job.max_attempts}`),
        job.target ? row("Target", `${job.target.method} ${job.target.url}`) : null,
        row("Last error", job.last_error),
        row("Created", time(job.created_at)),
        row("Started", time(job.started_at)),
        row("Finished", time(job.finished_at)),
        row("Shard", String(job.shard_id)),
        job.trace_id
          ? row("Trace", cfg.trace_url ? h("a", { href: cfg.trace_url.replace("{trace_id}", job.trace_id), target: "_blank", rel: "noopener" }, job.trace_id) : job.trace_id)
          : null,
      );
      fill(
        attempts,
        tries.length === 0
          ? h("tr", null, h("td", { colspan: 7 }, "No attempt has ended yet."))
          : tries.map((a) =>
              h(
                "tr",
                { "data-attempt": a.attempt },
                h("td", null, String(a.attempt)),
                h("td", null, statusBadge(a.outcome)),
                h("td", null, time(a.started_at)),
                h("td", null, time(a.finished_at)),
                h("td", { class: "num" }, a.duration_ms === null ? "-" : `${a.duration_ms} ms`),
                h("td", null, a.http_status === null ? "-" : String(a.http_status)),
                h("td", null, a.error ?? ""),
              ),
            ),
      );
      renderActions(job);
      error.clear();
      fill(live, CHANGING.has(job.status) ? `Updated ${new Date().toLocaleTimeString()}` : "");
    } catch (e) {
      error.show(`Could not load the job: ${words(e)}`);
    }
  };
  return poll(refresh, 2_000);
};
