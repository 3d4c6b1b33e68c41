// Small DOM helpers shared by the pages: element building (never innerHTML, so data from the
// server is always text), announcements for screen readers, the confirmation dialog, formats.

/** h("a", {href: "#/x", class: "c", onclick: fn}, "text", child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** SVG elements (the chart). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  append(el, children);
  return el;
}

/** Polite announcement for screen readers (and a hook for tests). */
export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  window.setTimeout(() => { region.textContent = text; }, 30);
}

/** The page-wide error banner (role=alert); empty text hides it. */
export function showAlert(text) {
  const banner = document.getElementById("alert");
  banner.textContent = text || "";
  banner.hidden = !text;
}

/** Asks before an action that loses or repeats work; resolves to true when confirmed. */
export function confirmAction(title, text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => {
      if (opener && opener.focus) opener.focus();
      resolve(dialog.returnValue === "ok");
    }, { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

/** Replaces the page content and moves focus to its heading. */
export function render(main, ...children) {
  main.replaceChildren(...children.flat().filter(Boolean));
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

export const EVENT_TYPES = [
  "SERVER_DOWN", "WORKFLOW_ADDED", "WORKFLOW_UPDATE", "WORKFLOW_REMOVED", "WORKFLOW_START",
  "WORKFLOW_END", "WORKFLOW_FAIL", "TASK_ADDED", "TASK_UPDATE", "TASK_REMOVED", "TASK_START",
  "TASK_END", "TASK_FAIL",
];

/** "EVENT_TYPE_TASK_FAIL" / "STATE_ACTIVE" / "ISOLATION_PROCESS" → the short name. */
export function short(value, prefix) {
  const text = String(value || "");
  return text.startsWith(prefix) ? text.slice(prefix.length) : text;
}

export const stateOf = (resource) => short(resource.state, "STATE_") || "UNSPECIFIED";

export function num(value) {
  const n = Number(value || 0);
  return Number.isFinite(n) ? n : 0;
}

export function fmtTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function fmtSeconds(value) {
  const n = num(value);
  if (n < 1) return n === 0 ? "0 s" : `${n.toFixed(2)} s`;
  if (n < 120) return `${n.toFixed(1)} s`;
  if (n < 7200) return `${(n / 60).toFixed(1)} min`;
  return `${(n / 3600).toFixed(1)} h`;
}

export function badge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

/** A labelled control in a toolbar or small form. */
export function labelled(text, control) {
  return h("label", {}, text, control);
}

/** Message of any error, for banners. */
export function errorText(err) {
  if (!err) return "";
  const base = err.message || String(err);
  const fields = (err.violations || []).map((v) => `${v.field}: ${v.description}`);
  return fields.length && !base.includes(fields[0]) ? `${base}\n${fields.join("\n")}` : base;
}

/** Runs an async action from a button: disables it meanwhile, reports errors in the banner. */
export async function busy(button, fn) {
  if (button) button.disabled = true;
  showAlert("");
  try {
    return await fn();
  } catch (err) {
    showAlert(errorText(err));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
