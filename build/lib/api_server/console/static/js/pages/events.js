// The newest stored events, optionally of one type, with their payloads. ListEvents reads in
// sequence order from a point; the newest sequence is found by a short doubling-then-halving
// search (about 2·log2(n) one-row reads), then the last page before it is read.

import { api } from "../api.js";
import { EVENT_TYPES, fmtTime, h, labelled, render, short } from "../ui.js";
import { payloadDetails } from "./instance_detail.js";

const PAGE = 50;

async function any(after, types) {
  const page = await api.listEvents({ afterSequence: after, eventTypes: types, pageSize: 1 });
  return (page.events || []).length ? Number(page.events[0].sequence) : 0;
}

/** The greatest sequence among the events of `types` (0 when none), searched from a hint. */
async function newestSequence(types, hint) {
  let lo = await any(Math.max(0, hint - 1), types);
  if (!lo && hint > 1) lo = await any(0, types);
  if (!lo) return 0;
  // Invariants: some event has sequence >= lo; none has one > hi (once hi is known).
  let step = 64;
  let hi = lo + step;
  for (let next = await any(hi, types); next; next = await any(hi, types)) {
    lo = next;
    step *= 2;
    hi = lo + step;
  }
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const next = await any(mid, types);
    if (next) lo = next; else hi = mid;
  }
  return lo;
}

export async function eventsPage(main) {
  const type = h("select", { id: "event-type" }, h("option", { value: "" }, "all types"), EVENT_TYPES.map((t) => h("option", { value: `EVENT_TYPE_${t}` }, t)));
  const after = h("input", { type: "number", id: "after-sequence", min: "0", step: "1", placeholder: "newest" });
  const show = h("button", { type: "submit", class: "primary" }, "Show");
  const info = h("p", { class: "muted", id: "events-info", "aria-live": "polite" });
  const table = h("table", { id: "events" });
  const older = h("button", { type: "button", id: "older" }, "Older");
  const newer = h("button", { type: "button", id: "newer" }, "Newer");
  let hint = 0;
  let shownFrom = 0;
  let shownTo = 0;

  /** Events of `types` with after < sequence <= upto, in order (all pages). */
  async function range(afterSeq, upto, types) {
    const out = [];
    let pageToken = "";
    for (;;) {
      const page = await api.listEvents({ afterSequence: afterSeq, eventTypes: types, pageSize: 1000, pageToken });
      for (const e of page.events || []) {
        if (Number(e.sequence) > upto) return out;
        out.push(e);
      }
      pageToken = page.nextPageToken || "";
      if (!pageToken) return out;
    }
  }

  /** The last PAGE events of `types` at or before `upto`: widen the window until it is full. */
  async function tail(upto, types) {
    for (let span = PAGE; ; span *= 4) {
      const start = Math.max(0, upto - span);
      const events = await range(start, upto, types);
      if (events.length >= PAGE || start === 0) return events.slice(-PAGE);
    }
  }

  /** `mode`: "newest", "older", "newer" or a sequence to start after. */
  async function load(mode) {
    const types = type.value ? [type.value] : [];
    let events;
    if (mode === "newest") {
      const newest = await newestSequence(types, hint);
      if (!types.length) hint = newest;
      events = newest ? await tail(newest, types) : [];
    } else if (mode === "older") {
      events = shownFrom > 1 ? await tail(shownFrom - 1, types) : [];
    } else {
      const from = mode === "newer" ? shownTo : mode;
      events = (await api.listEvents({ afterSequence: from, eventTypes: types, pageSize: PAGE })).events || [];
    }
    events.reverse(); // newest first
    if (events.length) {
      shownFrom = Number(events[events.length - 1].sequence);
      shownTo = Number(events[0].sequence);
    }
    info.textContent = events.length ? `Events ${shownFrom}–${shownTo}, newest first${type.value ? `, of type ${short(type.value, "EVENT_TYPE_")}` : ""}.` : "No events.";
    table.replaceChildren(
      h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "Sequence"), h("th", { scope: "col" }, "Type"),
        h("th", { scope: "col" }, "Published"), h("th", { scope: "col" }, "Source"), h("th", { scope: "col" }, "Id"), h("th", { scope: "col" }, "Event"))),
      h("tbody", {}, events.map((e) => h("tr", { dataset: { sequence: String(e.sequence) } },
        h("td", { class: "num" }, String(e.sequence)), h("td", {}, short(e.type, "EVENT_TYPE_")),
        h("td", {}, fmtTime(e.publishTime)), h("td", {}, e.source || ""), h("td", {}, h("code", {}, e.id || "")),
        h("td", {}, payloadDetails(e))))));
  }

  const form = h("form", { class: "toolbar", id: "events-form", role: "search" }, labelled("Type", type), labelled("After sequence", after), show);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(after.value === "" ? "newest" : Number(after.value));
  });
  older.addEventListener("click", () => load("older"));
  newer.addEventListener("click", () => load("newer"));
  render(main, h("h1", {}, "Events"), form, info, table, h("div", { class: "actions" }, older, newer));
  await load("newest");
}
