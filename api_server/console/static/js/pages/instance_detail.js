// One instance: its delivery status, a live chart, recent attempts, the dead-letter list and
// the operator actions (with a confirmation before any that loses or repeats work).

import { api, idOf } from "../api.js";
import { DeliveryCounter, LiveChart } from "../chart.js";
import { session } from "../session.js";
import { EVENT_TYPES, announce, badge, busy, confirmAction, fmtSeconds, fmtTime, h, labelled, num, render, short, stateOf } from "../ui.js";

const POLL_MS = 2000;

function payloadOf(event) {
  const { id, sequence, type, eventTime, publishTime, source, ...rest } = event || {};
  void id; void sequence; void type; void eventTime; void publishTime; void source;
  return rest;
}

export function payloadDetails(event) {
  return h("details", {}, h("summary", {}, "Payload"), h("pre", {}, JSON.stringify(payloadOf(event), null, 2)));
}

export async function instanceDetailPage(main, id) {
  let inst = await api.getInstance(id);
  const chart = new LiveChart(300);
  const counter = new DeliveryCounter();
  let lastPoll = Date.now();
  counter.update((inst.delivery || {}).recentAttempts);
  chart.add(lastPoll, 0, num((inst.delivery || {}).lagSeconds));

  const heading = h("h1", {}, inst.displayName || id, " ", h("span", { id: "state" }));
  const status = h("dl", { class: "status", id: "status" });
  const attempts = h("table", { id: "attempts" });
  const parkedBox = h("div", { id: "parked" });
  const result = h("p", { id: "action-result", "aria-live": "polite" });
  const actions = h("div", { class: "actions", id: "actions" });
  let lastParked = -1;

  // -- actions --------------------------------------------------------------------------
  const act = (verb, body, message) => async (e) => {
    const button = e.currentTarget;
    await busy(button, async () => {
      inst = await api.action(id, verb, body ? body() : {});
      result.textContent = message;
      announce(message);
      draw();
      await drawParked(true);
    });
  };
  const pause = h("button", { type: "button", id: "pause", onclick: act("pause", null, "Paused: events keep queueing.") }, "Pause");
  const resume = h("button", { type: "button", id: "resume", onclick: act("resume", null, "Resumed.") }, "Resume");
  const retry = h("button", { type: "button", id: "retry", onclick: act("retry", null, "Retrying the head event now.") }, "Retry now");
  const skip = h("button", { type: "button", id: "skip", class: "danger" }, "Skip head event");
  skip.addEventListener("click", async (e) => {
    if (!(await confirmAction("Skip the failing event?", "The head event is moved to the dead-letter list (parked) and delivery goes on with the next one. It is not delivered until someone redelivers it.", "Skip"))) return;
    await act("skip", null, "Head event parked; delivery goes on.")(e);
  });

  const replayMode = h("select", { id: "replay-mode" }, h("option", { value: "sequence" }, "from sequence"), h("option", { value: "time" }, "from time"));
  const replaySeq = h("input", { type: "number", id: "replay-sequence", min: "0", step: "1", value: "1" });
  const replayTime = h("input", { type: "datetime-local", id: "replay-time", step: "1", hidden: true });
  const replayValueLabel = h("label", { for: "replay-sequence", id: "replay-value-label" }, "Sequence");
  replayMode.addEventListener("change", () => {
    const bySeq = replayMode.value === "sequence";
    replaySeq.hidden = !bySeq;
    replayTime.hidden = bySeq;
    replayValueLabel.htmlFor = bySeq ? "replay-sequence" : "replay-time";
    replayValueLabel.textContent = bySeq ? "Sequence" : "Time (local)";
  });
  const replay = h("button", { type: "submit", id: "replay" }, "Replay");
  const replayForm = h("form", { class: "inline-form", id: "replay-form" }, labelled("Replay", replayMode), h("div", {}, replayValueLabel, replaySeq, replayTime), replay);
  replayForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const bySeq = replayMode.value === "sequence";
    let body;
    if (bySeq) {
      if (!/^\d+$/.test(replaySeq.value)) { result.textContent = "Give a sequence (a whole number)."; replaySeq.focus(); return; }
      body = { fromSequence: replaySeq.value };
    } else {
      const when = new Date(replayTime.value);
      if (!replayTime.value || Number.isNaN(when.getTime())) { result.textContent = "Give a time."; replayTime.focus(); return; }
      body = { fromTime: when.toISOString() };
    }
    const from = bySeq ? `sequence ${replaySeq.value}` : new Date(body.fromTime).toLocaleString();
    if (!(await confirmAction("Replay events?", `Every subscribed event from ${from} on is delivered again: the plugin sees those events a second time.`, "Replay"))) return;
    await busy(replay, async () => {
      inst = await api.action(id, "replay", body);
      result.textContent = `Replaying from ${from}.`;
      announce(result.textContent);
      draw();
    });
  });

  const testType = h("select", { id: "test-type" }, EVENT_TYPES.map((t) => h("option", { value: `EVENT_TYPE_${t}` }, t)));
  const firstType = (inst.eventTypes || [])[0];
  if (firstType) testType.value = firstType;
  const testButton = h("button", { type: "submit", id: "send-test" }, "Send test event");
  const testForm = h("form", { class: "inline-form", id: "test-form" }, labelled("Test event type", testType), testButton);
  testForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    await busy(testButton, async () => {
      const answer = await api.action(id, "sendTestEvent", { eventType: testType.value });
      result.textContent = answer.delivered
        ? `Test event delivered in ${num(answer.durationMs).toFixed(1)} ms.`
        : `Test event failed: ${answer.error || "unknown error"}`;
      announce(result.textContent);
    });
  });

  const remove = h("button", { type: "button", id: "delete", class: "danger" }, "Delete instance");
  remove.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete ${id}?`, "The instance stops; its pending and parked events are never delivered to it.", "Delete"))) return;
    await busy(remove, async () => {
      await api.deleteInstance(id);
      announce(`Instance ${id} deleted.`);
      location.hash = "#/instances";
    });
  });

  if (session.isAdmin) {
    actions.append(pause, resume, retry, skip, h("a", { class: "button", href: `#/instances/${id}/edit`, id: "edit" }, "Edit"), remove);
  }

  // -- drawing --------------------------------------------------------------------------
  function draw() {
    const d = inst.delivery || {};
    const state = stateOf(inst);
    document.getElementById("state")?.replaceChildren(badge(state));
    const policy = inst.failurePolicy || {};
    const rows = [
      ["State", badge(state)],
      ["Plugin", h("a", { href: "#/plugins" }, idOf(inst.plugin))],
      ["Pending", h("span", { id: "pending" }, String(num(d.pendingCount)))],
      ["Lag", fmtSeconds(d.lagSeconds)],
      ["Delivered up to sequence", String(num(d.deliveredSequence))],
      ["Last delivery", fmtTime(d.lastDeliveryTime)],
      ["Last error", h("span", { id: "last-error", class: d.lastError ? "error" : "muted" }, d.lastError || "none")],
      ["Failed attempts", String(num(d.attempts))],
      ["Next attempt", h("span", { id: "next-attempt" }, d.nextAttemptTime ? fmtTime(d.nextAttemptTime) : "—")],
      ["Parked events", String(num(d.parkedCount))],
      ["Alert server", d.owner || h("span", { class: "muted" }, "none")],
      ["Event types", (inst.eventTypes || []).map((t) => short(t, "EVENT_TYPE_")).join(", ")],
      ["Failure policy", policy.mode === "MODE_PARK" ? `park after ${policy.parkAfter} attempts` : "block and retry"],
      inst.filter ? ["Filter", h("code", {}, inst.filter)] : null,
      ["Params", Object.entries(inst.params || {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => h("div", {}, h("code", {}, k), " = ", v))],
    ].filter(Boolean);
    status.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    pause.hidden = state === "PAUSED";
    resume.hidden = state !== "PAUSED";
    retry.disabled = state !== "BLOCKED";
    skip.disabled = state !== "BLOCKED";

    attempts.replaceChildren(h("caption", { class: "visually-hidden" }, "Recent delivery attempts, newest first"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Outcome"), h("th", { scope: "col", class: "num" }, "Sequence"),
        h("th", { scope: "col", class: "num" }, "Events / attempt"), h("th", { scope: "col", class: "num" }, "Duration"))));
    const body = h("tbody");
    const list = d.recentAttempts || [];
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No attempts yet.")));
    for (const a of list) {
      body.append(h("tr", { class: a.error ? "failed" : "ok" },
        h("td", {}, fmtTime(a.time)),
        h("td", { class: a.error ? "err" : "" }, a.error ? `failed: ${a.error}` : "delivered"),
        h("td", { class: "num" }, String(num(a.sequence))),
        h("td", { class: "num" }, a.error ? `attempt ${num(a.count)}` : String(num(a.count))),
        h("td", { class: "num" }, `${num(a.durationMs).toFixed(1)} ms`)));
    }
    attempts.append(body);
  }

  async function drawParked(force = false) {
    const count = num((inst.delivery || {}).parkedCount);
    if (!force && count === lastParked) return;
    lastParked = count;
    const parked = await api.listParked(id);
    const boxes = [];
    const rows = parked.map((p) => {
      const seq = String((p.event || {}).sequence || "");
      const box = h("input", { type: "checkbox", value: seq, "aria-label": `Select parked event ${seq}` });
      boxes.push(box);
      return h("tr", { dataset: { sequence: seq } },
        session.isAdmin ? h("td", {}, box) : null,
        h("td", { class: "num" }, seq),
        h("td", {}, short((p.event || {}).type, "EVENT_TYPE_")),
        h("td", { class: "num" }, String(num(p.attempts))),
        h("td", { class: "err" }, p.lastError || ""),
        h("td", {}, fmtTime(p.parkTime), p.redeliveryPending ? h("div", { class: "muted" }, "redelivery pending") : null),
        h("td", {}, payloadDetails(p.event)));
    });
    const redeliver = async (button, sequences) => {
      const what = sequences.length ? `${sequences.length} selected parked event(s)` : `all ${parked.length} parked event(s)`;
      if (!(await confirmAction("Redeliver parked events?", `${what} are handed to the plugin again; delivered ones leave the list.`, "Redeliver"))) return;
      await busy(button, async () => {
        const answer = await api.action(id, "redeliverParkedEvents", sequences.length ? { sequences } : {});
        result.textContent = `Redelivery of ${num(answer.count)} parked event(s) requested.`;
        announce(result.textContent);
        await poll();
        await drawParked(true);
      });
    };
    const selected = h("button", { type: "button", id: "redeliver-selected", onclick: (e) => redeliver(e.currentTarget, boxes.filter((b) => b.checked).map((b) => b.value)) }, "Redeliver selected");
    const all = h("button", { type: "button", id: "redeliver-all", onclick: (e) => redeliver(e.currentTarget, []) }, "Redeliver all");
    parkedBox.replaceChildren(
      parked.length
        ? h("table", { id: "parked-table" }, h("thead", {}, h("tr", {}, session.isAdmin ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select")) : null,
            h("th", { scope: "col", class: "num" }, "Sequence"), h("th", { scope: "col" }, "Type"), h("th", { scope: "col", class: "num" }, "Attempts"),
            h("th", { scope: "col" }, "Last error"), h("th", { scope: "col" }, "Parked"), h("th", { scope: "col" }, "Event"))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No parked events."),
      session.isAdmin && parked.length ? h("div", { class: "actions" }, selected, all) : null);
  }

  async function poll() {
    inst = await api.getInstance(id);
    const now = Date.now();
    const delivered = counter.update((inst.delivery || {}).recentAttempts);
    chart.add(now, delivered / Math.max(0.001, (now - lastPoll) / 1000), num((inst.delivery || {}).lagSeconds));
    lastPoll = now;
    draw();
    await drawParked();
  }

  render(main,
    h("p", {}, h("a", { href: "#/instances" }, "← Instances")),
    heading,
    h("p", { class: "muted" }, `listenerInstances/${id}`),
    session.isAdmin ? h("section", { "aria-label": "Operator actions" }, actions, replayForm, testForm, result) : null,
    h("div", { class: "cols" },
      h("section", { "aria-labelledby": "status-h" }, h("h2", { id: "status-h" }, "Status"), status),
      h("section", { "aria-labelledby": "chart-h" }, h("h2", { id: "chart-h" }, "Last 5 minutes"), chart.svg,
        h("div", { class: "legend", "aria-hidden": "true" }, h("span", { class: "rate" }, "delivered events/s"), h("span", { class: "lag" }, "lag (s)")))),
    h("h2", {}, "Recent attempts"), attempts,
    h("h2", {}, "Parked events (dead-letter list)"), parkedBox);
  draw();
  await drawParked(true);

  let stopped = false;
  let timer = 0;
  const tick = async () => {
    if (stopped) return;
    try { if (!document.hidden) await poll(); } catch { /* the next tick tries again */ }
    if (!stopped) timer = window.setTimeout(tick, POLL_MS);
  };
  timer = window.setTimeout(tick, POLL_MS);
  return () => { stopped = true; window.clearTimeout(timer); };
}
