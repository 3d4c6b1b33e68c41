// A live two-line chart (delivered events/s and lag) drawn as inline SVG: no library, no
// inline styles (classes only, so the strict CSP holds).

import { s } from "./ui.js";

const W = 640, H = 220, L = 48, R = 52, T = 14, B = 26;

function nice(max) {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

function fmt(n) {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2).replace(/\.?0+$/, "") || "0";
}

/** Keeps the last `windowSeconds` of samples and redraws into `svg`. */
export class LiveChart {
  constructor(windowSeconds = 300) {
    this.windowSeconds = windowSeconds;
    this.samples = [];
    this.svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc" });
    this.title = s("title", { id: "chart-title" }, "Delivered events per second and lag");
    this.desc = s("desc", { id: "chart-desc" }, "No samples yet.");
    this.draw();
  }

  add(time, rate, lag) {
    this.samples.push({ time, rate, lag });
    const oldest = time - this.windowSeconds * 1000;
    while (this.samples.length && this.samples[0].time < oldest) this.samples.shift();
    this.draw();
  }

  draw() {
    const now = this.samples.length ? this.samples[this.samples.length - 1].time : Date.now();
    const start = now - this.windowSeconds * 1000;
    const rateMax = nice(Math.max(0, ...this.samples.map((x) => x.rate)));
    const lagMax = nice(Math.max(0, ...this.samples.map((x) => x.lag)));
    const x = (t) => L + ((t - start) / (this.windowSeconds * 1000)) * (W - L - R);
    const y = (v, max) => T + (1 - v / max) * (H - T - B);
    const line = (key, max) => this.samples.map((p, i) => `${i ? "L" : "M"}${x(p.time).toFixed(1)},${y(p[key], max).toFixed(1)}`).join(" ");
    const children = [this.title, this.desc];
    for (const f of [0, 0.5, 1]) {
      const yy = T + (1 - f) * (H - T - B);
      children.push(s("line", { class: "axis", x1: L, x2: W - R, y1: yy, y2: yy }));
      children.push(s("text", { x: L - 6, y: yy + 4, "text-anchor": "end" }, fmt(rateMax * f)));
      children.push(s("text", { x: W - R + 6, y: yy + 4 }, `${fmt(lagMax * f)} s`));
    }
    const minutes = this.windowSeconds / 60;
    for (let m = 0; m <= minutes; m++) {
      const xx = L + (m / minutes) * (W - L - R);
      children.push(s("text", { x: xx, y: H - 8, "text-anchor": "middle" }, m === minutes ? "now" : `-${minutes - m}m`));
    }
    children.push(s("text", { x: 4, y: 10 }, "events/s"));
    children.push(s("text", { x: W - 4, y: 10, "text-anchor": "end" }, "lag"));
    if (this.samples.length > 1) {
      children.push(s("path", { class: "rate", d: line("rate", rateMax) }));
      children.push(s("path", { class: "lag", d: line("lag", lagMax) }));
    }
    const last = this.samples[this.samples.length - 1];
    this.desc.textContent = last ? `Now ${fmt(last.rate)} events/s delivered, lag ${fmt(last.lag)} s; peak ${fmt(Math.max(...this.samples.map((p) => p.rate)))} events/s over the last ${minutes} minutes.` : "No samples yet.";
    this.svg.replaceChildren(...children);
  }
}

/**
 * Counts events delivered since the last poll from an instance's recent attempts (newest
 * first; a success's `count` is the events of its batch). Attempts already seen are skipped.
 */
export class DeliveryCounter {
  constructor() { this.seen = new Set(); this.primed = false; }

  update(attempts) {
    let delivered = 0;
    const current = new Set();
    for (const a of attempts || []) {
      const key = `${a.time}|${a.sequence}|${a.count}|${a.error || ""}`;
      current.add(key);
      if (this.primed && !this.seen.has(key) && !a.error) delivered += Number(a.count || 0);
    }
    this.seen = current; // an attempt that fell off the list never comes back
    this.primed = true;
    return delivered;
  }
}
