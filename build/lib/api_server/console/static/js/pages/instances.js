// Instances at a glance: state, pending, lag, parked and last error, filterable by text and
// state, refreshed every few seconds.

import { api, idOf } from "../api.js";
import { session } from "../session.js";
import { badge, fmtSeconds, h, labelled, num, render, short, stateOf } from "../ui.js";

export async function instancesPage(main) {
  const text = h("input", { type: "search", id: "filter-text", placeholder: "id, name, plugin or error", autocomplete: "off" });
  const state = h("select", { id: "filter-state" },
    ["", "ACTIVE", "BLOCKED", "PAUSED"].map((v) => h("option", { value: v }, v || "any")));
  const count = h("p", { class: "muted", id: "instances-count", "aria-live": "polite" });
  const table = h("table", { id: "instances" });
  let instances = [];

  function draw() {
    const needle = text.value.trim().toLowerCase();
    const wanted = state.value;
    const shown = instances.filter((inst) => {
      if (wanted && stateOf(inst) !== wanted) return false;
      if (!needle) return true;
      const d = inst.delivery || {};
      return [inst.name, inst.displayName, inst.plugin, d.lastError].some((v) => String(v || "").toLowerCase().includes(needle));
    });
    count.textContent = `${shown.length} of ${instances.length} instance(s)`;
    table.replaceChildren(h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Instance"), h("th", { scope: "col" }, "Plugin"), h("th", { scope: "col" }, "State"),
      h("th", { scope: "col", class: "num" }, "Pending"), h("th", { scope: "col", class: "num" }, "Lag"),
      h("th", { scope: "col", class: "num" }, "Parked"), h("th", { scope: "col" }, "Last error"), h("th", { scope: "col" }, "Events"))));
    const body = h("tbody");
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: "8", class: "muted" }, instances.length ? "No instance matches the filter." : "No listener instances yet.")));
    for (const inst of shown) {
      const id = idOf(inst.name);
      const d = inst.delivery || {};
      const types = (inst.eventTypes || []).map((t) => short(t, "EVENT_TYPE_"));
      body.append(h("tr", { dataset: { instance: id } },
        h("th", { scope: "row" }, h("a", { href: `#/instances/${id}` }, inst.displayName || id), inst.displayName ? h("div", { class: "muted" }, id) : null),
        h("td", {}, idOf(inst.plugin)),
        h("td", { class: "state" }, badge(stateOf(inst))),
        h("td", { class: "num pending" }, String(num(d.pendingCount))),
        h("td", { class: "num" }, fmtSeconds(d.lagSeconds)),
        h("td", { class: "num" }, String(num(d.parkedCount))),
        h("td", { class: "err" }, d.lastError || ""),
        h("td", {}, types.length > 3 ? `${types.slice(0, 3).join(", ")} +${types.length - 3}` : types.join(", "))));
    }
    table.append(body);
  }

  async function refresh() {
    instances = await api.listInstances();
    // Redrawing replaces the rows: keep keyboard focus on the same instance's link.
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-instance]");
    draw();
    if (focused) table.querySelector(`tr[data-instance="${focused.dataset.instance}"] a`)?.focus();
  }

  text.addEventListener("input", draw);
  state.addEventListener("change", draw);
  render(main,
    h("h1", {}, "Listener instances"),
    session.isAdmin ? h("p", {}, h("a", { href: "#/instances/new", class: "button primary", id: "new-instance" }, "New instance")) : null,
    h("div", { class: "toolbar", role: "search" }, labelled("Filter", text), labelled("State", state)),
    count, table);
  await refresh();
  const timer = window.setInterval(() => { if (!document.hidden) refresh().catch(() => {}); }, 3000);
  return () => window.clearInterval(timer);
}
