/** Sign in and sign up. A new user's signing secret is shown once, on the jobs page after sign-up. */
import { call, session, type One, type User } from "../api.ts";
import { h } from "../dom.ts";
import { Form } from "../form.ts";
import { go, say, watchExpiry, type Page } from "../shell.ts";

async function logIn(username: string, password: string): Promise<void> {
  const res = await call<One<{ token: string }>>("POST", "/api/v1/auth/login", { body: { username, password }, as: "none" });
  session.setUser(res.data.token);
  watchExpiry();
}

export const signInPage: Page = (main) => {
  const username = h("input", { type: "text", name: "username", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const form = new Form({ label: "Sign in" }, async () => {
    await logIn(username.value, password.value);
    say(`Signed in as ${username.value}.`);
    go("#/jobs");
  });
  form.el.append(
    form.errorLine(),
    form.field("/username", "Username", username),
    form.field("/password", "Password", password),
    h("div", null, h("button", { class: "primary", type: "submit" }, "Sign in")),
  );
  main.append(h("h1", null, "Sign in"), form.el, h("p", null, "No account yet? ", h("a", { href: "#/signup" }, "Sign up")));
};

/** The secret to show once after sign-up (kept in memory only). */
let newSigningSecret: string | null = null;
export function takeSigningSecret(): string | null {
  const s = newSigningSecret;
  newSigningSecret = null;
  return s;
}

export const signUpPage: Page = (main) => {
  const username = h("input", { type: "text", name: "username", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password", required: true });
  const weight = h("input", { type: "number", name: "job_weight", step: "any", min: "0.01", inputmode: "decimal" });
  const form = new Form({ label: "Sign up" }, async () => {
    const body: Record<string, unknown> = { username: username.value, password: password.value };
    if (weight.value.trim() !== "") body.job_weight = Number(weight.value);
    const created = await call<One<User & { signing_secret: string }>>("POST", "/api/v1/users", { body, as: "none" });
    newSigningSecret = created.data.signing_secret;
    await logIn(username.value, password.value);
    say(`Welcome, ${created.data.username}: your account has weight ${created.data.job_weight}.`);
    go("#/jobs");
  });
  form.el.append(
    form.errorLine(),
    form.field("/username", "Username", username, "3 to 64 letters, digits, _ . or -"),
    form.field("/password", "Password", password, "at least 8 characters"),
    form.field("/job_weight", "Job weight (optional)", weight, "your share of the executors when they are busy; leave empty for the default"),
    h("div", null, h("button", { class: "primary", type: "submit" }, "Create account")),
  );
  main.append(h("h1", null, "Sign up"), form.el, h("p", null, "Have an account? ", h("a", { href: "#/signin" }, "Sign in")));
};
