// Create or edit a listener instance: the params form rendered from the plugin's spec, the
// event types as checkboxes, the failure policy and the content filter. Client-side checks
// come from the spec; the server's BadRequest field violations land beside the same fields.

import { ApiError, api, idOf, instanceHasField } from "../api.js";
import { renderParams } from "../form_spec.js";
import { session } from "../session.js";
import { EVENT_TYPES, announce, errorText, h, render, short } from "../ui.js";

/** Which form field a server violation path is about: ["param", name] or ["field", key]. */
export function violationTarget(path) {
  let parts = String(path || "").split(".");
  const snake = (s) => s.replace(/([A-Z])/g, "_$1").toLowerCase();
  if (["listener_instance", "listenerInstance"].includes(parts[0]) && parts.length > 1) parts = parts.slice(1);
  const head = snake(parts[0].replace(/\[.*$/, ""));
  if (head === "params") {
    const bracket = parts[0].match(/\[["']?([^\]"']+)["']?\]$/);
    return ["param", bracket ? bracket[1] : parts.slice(1).join(".")];
  }
  if (head === "listener_instance_id") return ["field", "id"];
  if (head === "failure_policy") return ["field", "policy"];
  return ["field", head];
}

function fieldError(key) {
  return h("p", { class: "error", id: `f-${key}-err`, hidden: true });
}

export async function instanceFormPage(main, editId) {
  if (!session.isAdmin) {
    render(main, h("h1", {}, "Not allowed"), h("p", {}, "Your token may only look, not change instances."));
    return;
  }
  const [plugins, existing, filterSupported] = await Promise.all([
    api.listPlugins(),
    editId ? api.getInstance(editId) : null,
    instanceHasField("filter"),
  ]);
  const heading = h("h1", {}, existing ? `Edit ${existing.displayName || editId}` : "New listener instance");
  if (!existing && !plugins.length) {
    render(main, heading, h("p", {}, "Install a plugin first. "), h("a", { href: "#/plugins" }, "Go to plugins"));
    return;
  }

  const summary = h("div", { class: "error-box", id: "form-error", role: "alert", hidden: true });
  const idInput = h("input", { type: "text", id: "f-id", autocomplete: "off", spellcheck: "false", "aria-describedby": "f-id-info f-id-err" });
  const nameInput = h("input", { type: "text", id: "f-display_name", autocomplete: "off", value: existing ? existing.displayName || "" : "", "aria-describedby": "f-display_name-err" });
  const pluginSelect = h("select", { id: "f-plugin", disabled: !!existing, "aria-describedby": "f-plugin-info f-plugin-err" },
    plugins.map((p) => h("option", { value: idOf(p.name) }, `${p.displayName || idOf(p.name)} (${idOf(p.name)} ${p.version || ""})`)));
  if (existing) pluginSelect.value = idOf(existing.plugin);
  const paramsBox = h("div", { id: "params-box" });
  let params = null;

  function showParams() {
    const plugin = plugins.find((p) => idOf(p.name) === pluginSelect.value);
    const spec = (plugin && plugin.params) || [];
    params = renderParams(spec, existing ? existing.params || {} : null);
    paramsBox.replaceChildren(spec.length ? params.element : h("p", { class: "muted" }, "This plugin takes no parameters."));
  }
  pluginSelect.addEventListener("change", showParams);
  showParams();

  const chosenTypes = new Set((existing ? existing.eventTypes || [] : ["EVENT_TYPE_TASK_FAIL", "EVENT_TYPE_WORKFLOW_FAIL"]).map((t) => short(t, "EVENT_TYPE_")));
  const typeBoxes = EVENT_TYPES.map((t) => h("label", {}, h("input", { type: "checkbox", name: "eventType", value: `EVENT_TYPE_${t}`, checked: chosenTypes.has(t) }), t));
  const setAll = (on) => { for (const box of typesSet.querySelectorAll("input[name=eventType]")) box.checked = on; };
  const typesSet = h("fieldset", { id: "f-event_types", "aria-describedby": "f-event_types-err" },
    h("legend", {}, "Event types ", h("span", { class: "req", "aria-hidden": "true" }, "*")),
    h("div", { class: "types" }, typeBoxes),
    h("div", { class: "actions" }, h("button", { type: "button", onclick: () => setAll(true) }, "All"), h("button", { type: "button", onclick: () => setAll(false) }, "None")),
    fieldError("event_types"));

  const policy = existing && existing.failurePolicy ? existing.failurePolicy : {};
  const parking = policy.mode === "MODE_PARK";
  const parkAfter = h("input", { type: "number", id: "f-park_after", min: "1", max: "1000", step: "1", value: String(policy.parkAfter || 5), disabled: !parking, "aria-describedby": "f-policy-err" });
  const modeBlock = h("input", { type: "radio", name: "failure-mode", id: "f-mode-block", value: "MODE_BLOCK", checked: !parking });
  const modePark = h("input", { type: "radio", name: "failure-mode", id: "f-mode-park", value: "MODE_PARK", checked: parking });
  for (const r of [modeBlock, modePark]) r.addEventListener("change", () => { parkAfter.disabled = !modePark.checked; });
  const policySet = h("fieldset", { id: "f-policy" },
    h("legend", {}, "When an event fails"),
    h("div", { class: "choices" },
      h("label", {}, modeBlock, "Block and retry it with backoff until it succeeds (later events wait)"),
      h("label", {}, modePark, "Park it after ", parkAfter, " failed attempts and go on")),
    fieldError("policy"));

  // The content filter (a CEL expression over `event`, DESIGN §13), offered when this server's
  // API has the field; sent only when set or when it was set.
  const hadFilter = !!(existing && existing.filter);
  const filterInput = h("textarea", { id: "f-filter", rows: "2", spellcheck: "false", placeholder: 'e.g. event.task_fail.project_name == "etl"', "aria-describedby": "f-filter-info f-filter-err" });
  filterInput.value = existing ? existing.filter || "" : "";

  const submit = h("button", { type: "submit", class: "primary", id: "save" }, existing ? "Save" : "Create");
  const form = h("form", { class: "form", id: "instance-form", novalidate: true },
    summary,
    existing ? null : h("div", { class: "field" }, h("label", { for: "f-id" }, "Instance id"), idInput,
      h("p", { class: "info", id: "f-id-info" }, "Lower-case letters, digits and dashes, starting with a letter; empty: generated."), fieldError("id")),
    h("div", { class: "field" }, h("label", { for: "f-display_name" }, "Display name"), nameInput, fieldError("display_name")),
    h("div", { class: "field" }, h("label", { for: "f-plugin" }, "Plugin"), pluginSelect,
      h("p", { class: "info", id: "f-plugin-info" }, existing ? "Fixed at creation." : "The form below is the plugin's."), fieldError("plugin")),
    h("fieldset", { id: "f-params" }, h("legend", {}, "Parameters"), paramsBox),
    typesSet, policySet,
    filterSupported ? h("div", { class: "field" }, h("label", { for: "f-filter" }, "Filter (optional)"), filterInput,
      h("p", { class: "info", id: "f-filter-info" }, "A CEL expression over event; only matching events are delivered. Empty: every event of the chosen types."), fieldError("filter")) : null,
    h("div", { class: "actions" }, submit, h("a", { class: "button", href: existing ? `#/instances/${editId}` : "#/instances" }, "Cancel")));

  function setFieldError(key, message) {
    const error = document.getElementById(`f-${key}-err`);
    if (!error) return false;
    error.textContent = message;
    error.hidden = !message;
    const control = { id: idInput, display_name: nameInput, plugin: pluginSelect, event_types: typesSet, policy: parkAfter, filter: filterInput }[key];
    if (control) control.setAttribute("aria-invalid", message ? "true" : "false");
    return true;
  }

  function clearErrors() {
    summary.hidden = true;
    for (const key of ["id", "display_name", "plugin", "event_types", "policy", "filter"]) setFieldError(key, "");
    params.showErrors({});
  }

  function focusFirstInvalid() {
    const bad = form.querySelector('[aria-invalid="true"]');
    if (bad) (bad.tagName === "FIELDSET" ? bad.querySelector("input") : bad).focus();
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const { values, errors } = params.collect();
    const types = [...typesSet.querySelectorAll("input[name=eventType]:checked")].map((b) => b.value);
    const local = {};
    if (!types.length) local.event_types = "Choose at least one event type.";
    const after = Number(parkAfter.value);
    if (modePark.checked && !(Number.isInteger(after) && after >= 1 && after <= 1000)) local.policy = "Park after must be a whole number from 1 to 1000.";
    if (Object.keys(errors).length || Object.keys(local).length) {
      params.showErrors(errors);
      for (const [key, message] of Object.entries(local)) setFieldError(key, message);
      summary.textContent = "Some fields need attention.";
      summary.hidden = false;
      focusFirstInvalid();
      return;
    }
    const instance = {
      displayName: nameInput.value.trim(),
      params: values,
      eventTypes: types,
      failurePolicy: modePark.checked ? { mode: "MODE_PARK", parkAfter: after } : { mode: "MODE_BLOCK" },
    };
    const filter = filterInput.value.trim();
    const sendFilter = filterSupported && (!!filter || hadFilter);
    if (sendFilter) instance.filter = filter;
    submit.disabled = true;
    try {
      let saved;
      if (existing) {
        instance.name = existing.name;
        instance.etag = existing.etag;
        const mask = ["displayName", "params", "eventTypes", "failurePolicy", ...(sendFilter ? ["filter"] : [])];
        saved = await api.updateInstance(editId, instance, mask);
      } else {
        instance.plugin = `plugins/${pluginSelect.value}`;
        saved = await api.createInstance(idInput.value.trim(), instance);
      }
      announce(existing ? "Instance saved." : "Instance created.");
      location.hash = `#/instances/${idOf(saved.name)}`;
    } catch (err) {
      const paramErrors = {};
      const rest = [];
      for (const v of (err instanceof ApiError && err.violations) || []) {
        const [kind, key] = violationTarget(v.field);
        if (kind === "param" && params.has(key)) paramErrors[key] = v.description;
        else if (!(kind === "field" && setFieldError(key, v.description))) rest.push(`${v.field}: ${v.description}`);
      }
      params.showErrors(paramErrors);
      summary.textContent = [err.message || errorText(err), ...rest].join("\n");
      summary.hidden = false;
      focusFirstInvalid();
    } finally {
      submit.disabled = false;
    }
  });

  render(main, heading, form);
}
