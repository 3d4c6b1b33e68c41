// Plugins: what is installed and who uses it; install by upload (drop or pick a zip), hot-swap
// to a new package, uninstall. Errors stay beside the plugin they are about.

import { api, idOf, uploadPackage } from "../api.js";
import { session } from "../session.js";
import { announce, badge, confirmAction, errorText, fmtTime, h, render, short, stateOf } from "../ui.js";

/** Uploads with a progress bar, then runs `then(sha256)`; reports in `status`. */
async function uploadThen(file, progress, status, then) {
  if (!/\.zip$/i.test(file.name) && file.type !== "application/zip" && file.type !== "application/x-zip-compressed") {
    throw new Error(`${file.name} is not a .zip plugin package`);
  }
  progress.hidden = false;
  progress.value = 0;
  progress.max = file.size || 1;
  status.textContent = `Uploading ${file.name}…`;
  const stored = await uploadPackage(file, (loaded, total) => {
    progress.max = total || 1;
    progress.value = loaded;
    status.textContent = `Uploading ${file.name}: ${Math.round((100 * loaded) / (total || 1))} %`;
  });
  status.textContent = `Uploaded ${file.name} (${stored.size} bytes); installing…`;
  return then(stored.sha256);
}

export async function pluginsPage(main) {
  const errors = new Map(); // plugin id → error text shown in its row
  const table = h("table", { id: "plugins" });
  const heading = h("h1", {}, "Plugins");
  render(main, heading, session.isAdmin ? installSection() : null, h("h2", {}, "Installed"), table);

  async function refresh() {
    const [plugins, instances] = await Promise.all([api.listPlugins(), api.listInstances()]);
    const users = new Map();
    for (const inst of instances) {
      const pid = idOf(inst.plugin);
      if (!users.has(pid)) users.set(pid, []);
      users.get(pid).push(idOf(inst.name));
    }
    table.replaceChildren(h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Plugin"), h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Isolation"),
      h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Instances using it"), h("th", { scope: "col" }, "Updated"),
      session.isAdmin ? h("th", { scope: "col" }, "Actions") : null)));
    const body = h("tbody");
    if (!plugins.length) body.append(h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No plugins installed yet.")));
    for (const plugin of plugins) {
      const id = idOf(plugin.name);
      const using = users.get(id) || [];
      body.append(h("tr", { id: `plugin-${id}`, dataset: { plugin: id } },
        h("th", { scope: "row" }, plugin.displayName || id, h("div", { class: "muted" }, id)),
        h("td", {}, plugin.version || ""),
        h("td", {}, short(plugin.isolation, "ISOLATION_") || "NAMESPACE"),
        h("td", {}, badge(stateOf(plugin))),
        h("td", { class: "users" }, using.length ? using.map((u, i) => [i ? ", " : "", h("a", { href: `#/instances/${u}` }, u)]) : h("span", { class: "muted" }, "none")),
        h("td", {}, fmtTime(plugin.updateTime)),
        session.isAdmin ? h("td", {}, rowActions(plugin)) : null));
      const text = errors.get(id);
      if (text) {
        body.append(h("tr", { class: "row-error" }, h("td", { colspan: "7" },
          h("div", { class: "error-box", role: "alert", id: `plugin-${id}-error` }, text))));
      }
    }
    table.append(body);
  }

  function rowActions(plugin) {
    const id = idOf(plugin.name);
    const picker = h("input", { type: "file", accept: ".zip,application/zip", hidden: true, "aria-label": `New package for ${id}` });
    const progress = h("progress", { hidden: true, "aria-label": `Upload of ${id}'s new package` });
    const status = h("span", { class: "muted", "aria-live": "polite" });
    const update = h("button", { type: "button", onclick: () => picker.click() }, "Update package…");
    picker.addEventListener("change", async () => {
      const file = picker.files[0];
      if (!file) return;
      errors.delete(id);
      update.disabled = true;
      try {
        await uploadThen(file, progress, status, (sha256) =>
          api.updatePlugin(id, { plugin: { name: plugin.name, etag: plugin.etag }, packageSha256: sha256 }));
        announce(`Plugin ${id} updated to the new package.`);
      } catch (err) {
        errors.set(id, `Update failed; the previous version keeps running.\n${errorText(err)}`);
        announce(`Update of ${id} failed.`);
      } finally {
        update.disabled = false;
        picker.value = "";
      }
      await refresh();
    });
    const remove = h("button", { type: "button", class: "danger" }, "Uninstall");
    remove.addEventListener("click", async () => {
      if (!(await confirmAction(`Uninstall ${id}?`, "The plugin's package is removed from the store and every alert server.", "Uninstall"))) return;
      errors.delete(id);
      try {
        await api.deletePlugin(id);
        announce(`Plugin ${id} uninstalled.`);
      } catch (err) {
        errors.set(id, errorText(err));
      }
      await refresh();
    });
    return h("div", { class: "actions" }, update, remove, picker, progress, status);
  }

  function installSection() {
    const picker = h("input", { type: "file", id: "package-file", accept: ".zip,application/zip", "aria-describedby": "install-status" });
    const pluginId = h("input", { type: "text", id: "install-id", placeholder: "from the manifest", autocomplete: "off", spellcheck: "false" });
    const displayName = h("input", { type: "text", id: "install-display-name", autocomplete: "off" });
    const progress = h("progress", { id: "install-progress", hidden: true, "aria-label": "Upload progress" });
    const status = h("p", { id: "install-status", class: "muted", "aria-live": "polite" });
    const error = h("div", { id: "install-error", class: "error-box", role: "alert", hidden: true });
    const drop = h("div", { class: "drop", id: "drop-zone" },
      h("p", {}, "Drop a plugin package (.zip) here, or "), h("label", { for: "package-file" }, "choose a file: "), picker);

    async function install(file) {
      error.hidden = true;
      picker.disabled = true;
      try {
        const plugin = await uploadThen(file, progress, status, (sha256) => {
          const request = { packageSha256: sha256 };
          if (pluginId.value.trim()) request.pluginId = pluginId.value.trim();
          if (displayName.value.trim()) request.plugin = { displayName: displayName.value.trim() };
          return api.createPlugin(request);
        });
        status.textContent = `Installed ${idOf(plugin.name)} ${plugin.version || ""}.`;
        pluginId.value = "";
        displayName.value = "";
        await refresh();
      } catch (err) {
        status.textContent = "";
        error.textContent = `Install failed: ${errorText(err)}`;
        error.hidden = false;
      } finally {
        picker.disabled = false;
        picker.value = "";
      }
    }

    picker.addEventListener("change", () => { if (picker.files[0]) install(picker.files[0]); });
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) install(file);
    });
    return h("section", { "aria-labelledby": "install-h" }, h("h2", { id: "install-h" }, "Install a plugin"),
      h("div", { class: "toolbar" },
        h("label", { for: "install-id" }, "Plugin id (optional)", pluginId),
        h("label", { for: "install-display-name" }, "Display name (optional)", displayName)),
      drop, progress, status, error);
  }

  await refresh();
}
