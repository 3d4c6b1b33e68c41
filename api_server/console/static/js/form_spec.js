// Renders a plugin's DolphinScheduler form spec (DESIGN §6) as labelled controls, reads the
// values back as the strings instance params carry, and checks them as the server will
// (required, number, range, options), so most mistakes are shown before a round trip.

import { h } from "./ui.js";

/** What password params look like in every answer: the server never sends a secret. */
export const MASK = "******";
const KEEP = "set — leave empty to keep it";

/** A form value as params carry it: bools true/false, lists as JSON, whole floats as ints. */
export function toText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (Array.isArray(value)) return JSON.stringify(value.map(toText));
  if (typeof value === "number" && Number.isInteger(value)) return String(value);
  return String(value);
}

function parseList(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return [];
  if (trimmed.startsWith("[")) {
    try { return JSON.parse(trimmed).map(toText); } catch { return []; }
  }
  return trimmed.split(",").map((p) => p.trim()).filter(Boolean);
}

const options = (entry) => (entry.options || []).map((o) => ({ label: String(o.label ?? toText(o.value)), value: toText(o.value) }));
const ruleOf = (entry) => entry.validate || {};
const controlId = (field) => `p-${field}`;

/** Checks one value as validate_params does; returns a message or "". */
export function checkValue(entry, text) {
  const rule = ruleOf(entry);
  const kind = entry.type || "input";
  const empty = !String(text ?? "").trim() || (kind === "checkbox" && parseList(text).length === 0);
  if (empty) return rule.required ? (rule.message || "is required") : "";
  if (kind === "input-number") {
    const t = String(text).trim();
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return "must be a number";
    const n = Number(t);
    if (rule.min !== undefined && rule.min !== null && n < Number(rule.min)) return `must be at least ${toText(Number(rule.min))}`;
    if (rule.max !== undefined && rule.max !== null && n > Number(rule.max)) return `must be at most ${toText(Number(rule.max))}`;
  }
  if (kind === "switch" && !["true", "false"].includes(String(text).trim().toLowerCase())) return "must be true or false";
  if (kind === "radio" || kind === "select") {
    const allowed = options(entry).map((o) => o.value);
    if (!allowed.includes(text)) return `must be one of ${allowed.join(", ")}`;
  }
  if (kind === "checkbox") {
    const allowed = options(entry).map((o) => o.value);
    const bad = parseList(text).filter((v) => !allowed.includes(v));
    if (bad.length) return `${bad.join(", ")} not among the options ${allowed.join(", ")}`;
  }
  return "";
}

function describedBy(field, entry) {
  return [entry.info ? `${controlId(field)}-info` : "", `${controlId(field)}-err`].filter(Boolean).join(" ");
}

function buildControl(entry, initial) {
  const field = String(entry.field);
  const id = controlId(field);
  const kind = entry.type || "input";
  const props = entry.props || {};
  const rule = ruleOf(entry);
  // A secret (a password field, or any field the plugin marks secret) never comes back: its
  // value arrives masked, meaning "set; leave the box empty to keep it".
  const masked = initial === MASK && ["input", "textarea", "password"].includes(kind);
  const common = { id, name: field, "aria-describedby": describedBy(field, entry), "aria-required": rule.required ? "true" : null, dataset: { param: field } };
  switch (kind) {
    case "input-number": {
      const step = props.step ?? "any";
      return h("input", { ...common, type: "number", inputmode: "decimal", value: initial, min: rule.min ?? null, max: rule.max ?? null, step: String(step) });
    }
    case "textarea": {
      const el = h("textarea", { ...common, rows: String(props.rows || 4), placeholder: masked ? KEEP : (props.placeholder || null), dataset: { param: field, masked: masked ? "1" : "" } });
      el.value = masked ? "" : initial;
      return el;
    }
    case "password":
      return h("input", { ...common, type: "password", autocomplete: "new-password", value: masked ? "" : initial,
        placeholder: masked ? KEEP : (props.placeholder || null), dataset: { param: field, masked: masked ? "1" : "" } });
    case "switch":
      return h("input", { ...common, type: "checkbox", role: "switch", checked: String(initial).toLowerCase() === "true" });
    case "select": {
      const select = h("select", common);
      if (!rule.required || !options(entry).some((o) => o.value === initial)) select.append(h("option", { value: "" }, "—"));
      for (const o of options(entry)) select.append(h("option", { value: o.value, selected: o.value === initial }, o.label));
      select.value = initial;
      return select;
    }
    case "radio":
    case "checkbox": {
      const chosen = kind === "checkbox" ? parseList(initial) : [initial];
      const box = h("div", { class: "choices" });
      options(entry).forEach((o, i) => {
        box.append(h("label", {}, h("input", { type: kind, name: `param-${field}`, id: `${id}-${i}`, value: o.value, checked: chosen.includes(o.value), dataset: { param: field } }), o.label));
      });
      return box;
    }
    default:
      return h("input", { ...common, type: "text", value: masked ? "" : initial, placeholder: masked ? KEEP : (props.placeholder || null),
        autocomplete: "off", spellcheck: "false", dataset: { param: field, masked: masked ? "1" : "" } });
  }
}

/**
 * The form's fields. `values` are the instance's params (edit) or null (create: the spec's
 * defaults). Returns {element, collect, showErrors, focusFirstError}.
 */
export function renderParams(spec, values) {
  const wrappers = new Map();
  const element = h("div", { class: "params" });
  for (const entry of spec) {
    const field = String(entry.field);
    const kind = entry.type || "input";
    const initial = values ? (values[field] ?? "") : toText(entry.value);
    const title = entry.title || entry.name || field;
    const required = ruleOf(entry).required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null;
    const control = buildControl(entry, initial);
    const info = entry.info ? h("p", { class: "info", id: `${controlId(field)}-info` }, entry.info) : null;
    const error = h("p", { class: "error", id: `${controlId(field)}-err`, hidden: true });
    let wrapper;
    if (kind === "radio" || kind === "checkbox") {
      wrapper = h("fieldset", { class: "field", id: `field-${field}`, "aria-describedby": describedBy(field, entry) },
        h("legend", {}, title, required), info, control, error);
    } else if (kind === "switch") {
      wrapper = h("div", { class: "field", id: `field-${field}` },
        h("label", { class: "switch", for: controlId(field) }, control, h("span", {}, title)), info, error);
    } else {
      wrapper = h("div", { class: "field", id: `field-${field}` },
        h("label", { for: controlId(field) }, title, required), control, info, error);
    }
    wrappers.set(field, { entry, wrapper, error, initial });
    element.append(wrapper);
  }

  function read(field) {
    const { entry, wrapper, initial } = wrappers.get(field);
    const kind = entry.type || "input";
    if (kind === "switch") return wrapper.querySelector("input").checked ? "true" : "false";
    if (kind === "radio") return (wrapper.querySelector("input:checked") || {}).value || "";
    if (kind === "checkbox") return JSON.stringify([...wrapper.querySelectorAll("input:checked")].map((i) => i.value));
    const control = document.getElementById(controlId(field));
    if (control.dataset.masked === "1" && control.value === "") return initial; // keep the stored secret
    return control.value;
  }

  function showErrors(errors) {
    for (const [field, { wrapper, error }] of wrappers) {
      const message = errors[field] || "";
      error.textContent = message;
      error.hidden = !message;
      for (const c of wrapper.querySelectorAll("input, select, textarea")) c.setAttribute("aria-invalid", message ? "true" : "false");
      if (wrapper.tagName === "FIELDSET") wrapper.setAttribute("aria-invalid", message ? "true" : "false");
    }
  }

  /** {values, errors}: values of every field as strings, errors by field. */
  function collect() {
    const out = {};
    const errors = {};
    for (const [field, { entry }] of wrappers) {
      const text = read(field);
      const problem = text === MASK ? "" : checkValue(entry, text);
      if (problem) errors[field] = problem;
      out[field] = text;
    }
    return { values: out, errors };
  }

  function focusFirstError() {
    for (const [, { wrapper, error }] of wrappers) {
      if (!error.hidden) {
        const control = wrapper.querySelector("input, select, textarea");
        if (control) control.focus();
        return true;
      }
    }
    return false;
  }

  return { element, collect, showErrors, focusFirstError, has: (field) => wrappers.has(field) };
}
