/**
 * Forms whose errors come from the API: each field is registered under the JSON pointer the API
 * names it by (/username, /target/url), and a refusal puts each detail's message under its field
 * (aria-invalid, aria-describedby); what names no field goes to the form's own error line.
 */
import { ApiFailure, words } from "./api.ts";
import { alertLine, fill, h } from "./dom.ts";

type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

export class Form {
  readonly el: HTMLFormElement;
  private readonly error = alertLine();
  private readonly fields = new Map<string, { control: Control; error: HTMLElement }>();
  private busy = false;

  constructor(attrs: { class?: string; label: string }, private readonly submit: () => Promise<void>) {
    this.el = h("form", { class: attrs.class ?? "stack", "aria-label": attrs.label, novalidate: true });
    this.el.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.run();
    });
  }

  /** A labelled control, registered under the API's path for it. */
  field(path: string, label: string, control: Control, hint?: string): HTMLElement {
    const id = control.id || `f${path.replace(/[^a-z0-9]/gi, "-")}`;
    control.id = id;
    const error = h("div", { class: "field-error", id: `${id}-error` });
    const hintEl = hint ? h("div", { class: "hint", id: `${id}-hint` }, hint) : null;
    control.setAttribute("aria-describedby", [hintEl ? `${id}-hint` : "", `${id}-error`].filter(Boolean).join(" "));
    this.fields.set(path, { control, error });
    return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl, error);
  }

  /** The form-level error line; place it where it reads best (top of the form). */
  errorLine(): HTMLElement {
    return this.error.el;
  }

  clear(): void {
    this.error.clear();
    for (const f of this.fields.values()) {
      fill(f.error);
      f.control.removeAttribute("aria-invalid");
    }
  }

  /** Shows a failure: field messages under their fields, the rest on the form. */
  show(e: unknown): void {
    this.clear();
    const details = e instanceof ApiFailure ? e.details : [];
    const unplaced = details.filter((d) => {
      const f = this.fields.get(d.path) ?? this.fields.get(d.path.replace(/\/[^/]*$/, ""));
      if (!f) return true;
      fill(f.error, d.message);
      f.control.setAttribute("aria-invalid", "true");
      return false;
    });
    const placed = details.length - unplaced.length;
    const message =
      e instanceof ApiFailure
        ? [e.message + (placed ? ` (see the marked field${placed > 1 ? "s" : ""})` : ""), ...unplaced.map((d) => `${d.path.slice(1) || "request"}: ${d.message}`)].join("; ")
        : words(e);
    this.error.show(message);
    const first = [...this.fields.values()].find((f) => f.control.getAttribute("aria-invalid") === "true");
    first?.control.focus();
  }

  private async run(): Promise<void> {
    if (this.busy) return; // a double click submits once
    this.busy = true;
    const buttons = [...this.el.querySelectorAll("button")];
    for (const b of buttons) b.disabled = true;
    this.clear();
    try {
      await this.submit();
    } catch (e) {
      this.show(e);
    } finally {
      this.busy = false;
      for (const b of buttons) b.disabled = false;
    }
  }
}
