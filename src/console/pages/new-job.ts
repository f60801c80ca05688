/**
 * Schedule a job: the time is entered in the browser's zone and shown in UTC as it will be sent;
 * an optional HTTP target. The form carries an Idempotency-Key, so submitting it twice (a retry
 * after a timeout) creates one job. Every refusal is the API's, shown next to its field.
 */
import { DEFAULT_PRIORITY, PRIORITIES } from "../../jobs/job-input.ts";
import { call, type Job, type One } from "../api.ts";
import { fill, h, toLocalInput, zone } from "../dom.ts";
import { Form } from "../form.ts";
import { go, say, type Page } from "../shell.ts";

export const newJobPage: Page = (main) => {
  const key = crypto.randomUUID();
  const message = h("textarea", { name: "message", required: true });
  const at = h("input", { type: "datetime-local", name: "execute_at", step: "1", value: toLocalInput(new Date(Date.now() + 60_000)) });
  const utc = h("div", { class: "hint", "aria-live": "polite" });
  const priority = h("select", { name: "priority" }, PRIORITIES.map((p) => h("option", { value: p, selected: p === DEFAULT_PRIORITY }, p === DEFAULT_PRIORITY ? `${p} (default)` : p)));
  const attempts = h("input", { type: "number", name: "max_attempts", min: "1", max: "100", step: "1", inputmode: "numeric" });
  const useTarget = h("input", { type: "checkbox", name: "use_target", id: "use-target" });
  const url = h("input", { type: "url", name: "url", placeholder: "https://example.com/hook" });
  const method = h("select", { name: "method" }, ["POST", "PUT", "PATCH", "GET", "DELETE"].map((m) => h("option", { value: m }, m)));
  const timeout = h("input", { type: "number", name: "timeout_ms", min: "100", max: "300000", step: "1", inputmode: "numeric" });

  const when = () => (at.value ? new Date(at.value) : null);
  const showUtc = () => {
    const d = when();
    fill(utc, d && !Number.isNaN(d.getTime()) ? `Sent as ${d.toISOString()} (UTC)` : "Choose a date and time.");
  };
  at.addEventListener("input", showUtc);
  showUtc();

  const form = new Form({ label: "New job" }, async () => {
    const d = when();
    const body: Record<string, unknown> = {
      message: message.value,
      // An unparseable time goes as typed, so the API's own message explains it.
      execute_at: d && !Number.isNaN(d.getTime()) ? d.toISOString() : at.value,
      priority: priority.value,
    };
    if (attempts.value.trim() !== "") body.max_attempts = Number(attempts.value);
    if (useTarget.checked) {
      body.target = { url: url.value, method: method.value, ...(timeout.value.trim() !== "" ? { timeout_ms: Number(timeout.value) } : {}) };
    }
    const created = await call<One<Job>>("POST", "/api/v1/me/jobs", { body, headers: { "idempotency-key": key } });
    say(`Job ${created.data.id} is scheduled for ${new Date(created.data.execute_at).toLocaleString()}.`);
    go(`#/jobs/${created.data.id}`);
  });
  const targetFields = h(
    "fieldset",
    { hidden: true },
    h("legend", null, "HTTP target"),
    form.field("/target/url", "URL", url, "called with the message as the body"),
    form.field("/target/method", "Method", method),
    form.field("/target/timeout_ms", "Timeout (ms, optional)", timeout),
  );
  useTarget.addEventListener("change", () => (targetFields.hidden = !useTarget.checked));
  form.el.append(
    form.errorLine(),
    form.field("/message", "Message", message),
    form.field("/execute_at", `Run at (your time zone: ${zone})`, at),
    utc,
    form.field("/priority", "Priority", priority, "among your own due jobs, which go first; other users' share is not affected"),
    form.field("/max_attempts", "Attempts at most (optional)", attempts, "1 to 100; retries back off exponentially"),
    h("div", null, h("label", { for: "use-target", class: "inline" }, useTarget, " Call an HTTP target")),
    targetFields,
    h("div", null, h("button", { class: "primary", type: "submit" }, "Schedule job")),
  );
  main.append(h("h1", null, "New job"), form.el);
};
