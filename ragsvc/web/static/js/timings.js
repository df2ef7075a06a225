// Per-stage timings (`timings_ms` of a search) as one small stacked bar: a segment per stage, its width the
// stage's share of the total, its label the milliseconds.

import { el } from "./dom.js";

export function timingSegments(timings) {
  const stages = Object.entries(timings || {}).filter(([name, ms]) => name !== "total_ms" && ms > 0);
  const total = Math.max(timings?.total_ms || 0, stages.reduce((sum, [, ms]) => sum + ms, 0));
  return { total, stages: stages.map(([name, ms]) => ({ name: name.replace(/_ms$/, ""), ms,
    share: total > 0 ? ms / total : 0 })) };
}

export function renderTimings(box, timings) {
  const { total, stages } = timingSegments(timings);
  if (total <= 0) {
    box.hidden = true;
    return;
  }
  const bar = el("div", { class: "bar", role: "img",
    "aria-label": stages.map((s) => `${s.name} ${s.ms.toFixed(1)} ms`).join(", ") },
  stages.map((s, i) => el("span", { class: `seg seg-${i % 6}`, style: { width: `${(s.share * 100).toFixed(2)}%` },
    title: `${s.name}: ${s.ms.toFixed(2)} ms` })));
  const legend = el("ul", { class: "legend" }, stages.map((s, i) =>
    el("li", {}, el("span", { class: `swatch seg-${i % 6}` }), `${s.name} ${s.ms.toFixed(1)} ms`)));
  box.replaceChildren(el("div", { class: "timings-head", text: `total ${total.toFixed(1)} ms` }), bar, legend);
  box.hidden = false;
}
