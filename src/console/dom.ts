/**
 * Building the page: `h()` makes elements from data (text is always a text node, never HTML, so
 * nothing a user typed can become markup), and small helpers for times and polling.
 */

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | ((e: any) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "value" && "value" in el) (el as HTMLInputElement).value = String(v);
    else if (k === "checked" && "checked" in el) (el as HTMLInputElement).checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A time in the browser's zone, with its UTC form as the tooltip. */
export function time(iso: string | null): Node {
  if (!iso) return document.createTextNode("-");
  const d = new Date(iso);
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }));
}

/** A datetime-local input's value (browser's zone) for a time. */
export function toLocalInput(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The browser's zone name, for labels. */
export const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/**
 * Runs `fn` now and then `everyMs` after each run ends (never two at once, so a slow network
 * slows the refresh instead of piling requests up); skipped while the tab is hidden.
 * Returns the stop function.
 */
export function poll(fn: () => Promise<void>, everyMs: number): () => void {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) await fn().catch(() => {});
    if (!stopped) timer = setTimeout(run, everyMs);
  };
  void run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A line saying what went wrong (an alert for screen readers), hidden while nothing has. */
export function alertLine(): { el: HTMLElement; show(message: string): void; clear(): void } {
  const el = h("div", { class: "form-error", role: "alert", hidden: true });
  return {
    el,
    show: (message) => {
      fill(el, message);
      el.hidden = false;
    },
    clear: () => {
      fill(el);
      el.hidden = true;
    },
  };
}

export function statusBadge(status: string): HTMLElement {
  return h("span", { class: `status ${status}` }, status);
}
