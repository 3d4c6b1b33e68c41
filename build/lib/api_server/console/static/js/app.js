// The console's entry: a hash router over the pages, the sign-in gate and the header.

import { ApiError } from "./api.js";
import { detect, session, signOut } from "./session.js";
import { h, render, showAlert, errorText } from "./ui.js";
import { pluginsPage } from "./pages/plugins.js";
import { instancesPage } from "./pages/instances.js";
import { instanceFormPage } from "./pages/instance_form.js";
import { instanceDetailPage } from "./pages/instance_detail.js";
import { eventsPage } from "./pages/events.js";
import { signInPage } from "./pages/signin.js";

const main = document.getElementById("main");
let cleanup = null; // the current page's stop function (timers)

const routes = [
  [/^#\/plugins$/, () => pluginsPage(main), "plugins"],
  [/^#\/instances$/, () => instancesPage(main), "instances"],
  [/^#\/instances\/new$/, () => instanceFormPage(main, null), "instances"],
  [/^#\/instances\/([a-z0-9-]+)\/edit$/, (m) => instanceFormPage(main, m[1]), "instances"],
  [/^#\/instances\/([a-z0-9-]+)$/, (m) => instanceDetailPage(main, m[1]), "instances"],
  [/^#\/events$/, () => eventsPage(main), "events"],
  [/^#\/signin$/, () => signInPage(main, onSignedIn), ""],
];

function renderWho() {
  const who = document.getElementById("who");
  who.replaceChildren();
  if (!session.role) return;
  who.append(h("span", { id: "role" }, session.open ? `${session.role} (open server)` : `Signed in: ${session.role}`));
  if (!session.open) {
    who.append(h("button", { type: "button", id: "signout", onclick: () => { signOut(); renderWho(); location.hash = "#/signin"; } }, "Sign out"));
  }
}

function onSignedIn() {
  renderWho();
  location.hash = "#/instances";
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  showAlert("");
  const hash = location.hash || "#/instances";
  if (!session.role && hash !== "#/signin") {
    location.hash = "#/signin";
    return;
  }
  for (const [pattern, page, nav] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    try {
      cleanup = (await page(match)) || null;
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        signOut();
        renderWho();
        location.hash = "#/signin";
        return;
      }
      render(main, h("h1", {}, "Something went wrong"), h("p", { class: "error-box" }, errorText(err)));
    }
    return;
  }
  render(main, h("h1", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: "#/instances" }, "Go to instances"));
}

async function start() {
  try {
    const result = await detect();
    if (result === "admin" || result === "viewer") renderWho();
  } catch (err) {
    showAlert(errorText(err));
  }
  window.addEventListener("hashchange", route);
  await route();
}

start();
