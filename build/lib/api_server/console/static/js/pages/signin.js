// Sign-in with an API token. The token stays in this tab's sessionStorage and goes out only
// as an Authorization header; it is never put in a URL or a cookie.

import { session, signIn } from "../session.js";
import { h, render, errorText } from "../ui.js";

export function signInPage(main, onSignedIn) {
  if (session.role) {
    render(main, h("h1", {}, "Signed in"), h("p", {}, `You are signed in as ${session.role}. `), h("a", { href: "#/instances" }, "Go to instances"));
    return;
  }
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-help token-err" });
  const error = h("p", { id: "token-err", class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "signin", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "token" }, "API token"), input,
      h("p", { class: "info", id: "token-help" }, "An admin or viewer token of this server (the tokens setting). It is kept in this browser tab only.")),
    error, submit);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    if (!input.value.trim()) {
      error.textContent = "Enter a token.";
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const result = await signIn(input.value);
      if (result === "signin") error.textContent = "This token is not valid for this server.";
      else if (result === "publisher-only") error.textContent = "This token may only publish events; the console needs an admin or viewer token.";
      else { input.value = ""; onSignedIn(); return; }
      input.select();
      input.focus();
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  });
  render(main, h("h1", {}, "Sign in"), h("p", {}, "This server requires an API token."), form);
  input.focus();
}
