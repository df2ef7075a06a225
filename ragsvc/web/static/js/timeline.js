// The Agents tab's simulation timeline: pick a run the server serves (GET /v1/simulations), see its committed
// transcript as ticks down a vertical axis, each agent in its own colour lane, one agent or all. A row shows
// the action, where, the utterance and who to; its memory ids are buttons that open the memories they name.
//
// Pages come from GET /v1/simulations/{run}/transcript and are appended in order: "Load more" continues after
// the last row shown (the page's next_after_tick / next_after_seq), so nothing is skipped or shown twice.

import { ApiError, get, pathPart } from "./api.js";
import { $, busy, el, showError } from "./dom.js";

const PAGE = 200;
const LANES = 6; // lane colours in console.css, reused when a town has more residents
let runs = [];
let view = null; // {run, agent, next, lastTick, lanes}

function laneOf(agent) {
  if (!view.lanes.has(agent)) view.lanes.set(agent, view.lanes.size % LANES);
  return view.lanes.get(agent);
}

export async function refreshSimulations() {
  const box = $("sim-error");
  try {
    runs = await get("/v1/simulations");
    const select = $("sim-run");
    const chosen = select.value;
    select.replaceChildren(...runs.map((r) => el("option", { value: r.name, disabled: r.state !== "ready",
      text: r.state === "ready" ? `${r.name} · ${r.town} · ${r.num_ticks} tick(s)` : `${r.name} (${r.state})` })));
    const ready = runs.filter((r) => r.state === "ready");
    if (ready.some((r) => r.name === chosen)) select.value = chosen;
    else if (ready.length) select.value = ready[0].name;
    showError(box, runs.length ? null : new ApiError(0, "client", "No simulation runs on this server yet: " +
      "`ragsvc agents run agents/town --name NAME` writes one under its runs root."));
    runChanged();
  } catch (error) {
    showError(box, error);
  }
}

function runChanged() {
  const run = runs.find((r) => r.name === $("sim-run").value);
  const select = $("sim-agent");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "all agents" }),
    ...(run ? run.agents : []).map((a) => el("option", { value: a, text: a })));
  if (run && run.agents.includes(chosen)) select.value = chosen;
}

function memoryButton(row, id) {
  return el("button", { type: "button", class: "mem-id", "aria-expanded": "false",
    title: `show memory ${id} of ${row.agent}`, text: `#${id}`, onclick: (event) => openMemory(event.currentTarget, row, id) });
}

async function openMemory(button, row, id) {
  const holder = button.closest(".event").querySelector(".event-memories");
  const shown = holder.querySelector(`[data-memory="${id}"]`);
  if (shown) {
    shown.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  if (button.getAttribute("aria-busy") === "true") return;
  button.setAttribute("aria-busy", "true"); // not disabled: a disabled button would lose the keyboard's focus
  try {
    const params = new URLSearchParams({ agent: row.agent, ids: String(id) });
    const [memory] = await get(`/v1/simulations/${pathPart(view.run)}/memories?${params}`);
    const body = memory ? [el("span", { class: "chip", text: memory.kind }), ` ${memory.text} `,
      el("span", { class: "muted", text: `· ${memory.created_h.toFixed(2)} h` +
        (memory.importance === null ? "" : ` · importance ${memory.importance.toFixed(0)}`) })]
      : [el("span", { class: "muted", text: `memory ${id} is not one of ${row.agent}'s` })];
    holder.append(el("div", { class: "event-memory", "data-memory": String(id) }, el("strong", { text: `#${id} ` }), ...body));
    button.setAttribute("aria-expanded", "true");
  } catch (error) {
    holder.append(el("div", { class: "error", "data-memory": String(id), text: error.message }));
  } finally {
    button.setAttribute("aria-busy", "false");
  }
}

function eventItem(row) {
  const what = [el("span", { class: `actor lane-${laneOf(row.agent)}`, text: row.agent }),
    el("span", { class: "chip", text: row.action })];
  if (row.partner) what.push(el("span", { class: "muted", text: ` → ${row.partner}` }));
  if (row.location) what.push(el("span", { class: "muted", text: ` @ ${row.location}` }));
  return el("li", { class: `event lane-${laneOf(row.agent)}`, "data-tick": String(row.tick) },
    el("div", { class: "event-head" }, ...what),
    row.utterance ? el("div", { class: "utterance", text: row.utterance }) : null,
    row.memory_ids.length ? el("div", { class: "event-ids" }, el("span", { class: "muted", text: "memories " }),
      ...row.memory_ids.map((id) => memoryButton(row, id))) : null,
    el("div", { class: "event-memories" }));
}

function append(rows) {
  const timeline = $("sim-timeline");
  for (const row of rows) {
    if (row.tick !== view.lastTick) {
      view.lastTick = row.tick;
      timeline.append(el("li", { class: "tick", "data-tick": String(row.tick) },
        el("h4", { class: "tick-head", text: `tick ${row.tick} · ${row.clock}` }), el("ol", { class: "events" })));
    }
    timeline.lastElementChild.querySelector(".events").append(eventItem(row));
  }
}

async function loadPage() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (view.agent) params.set("agent", view.agent);
  if (view.next) {
    params.set("after_tick", String(view.next[0]));
    params.set("after_seq", String(view.next[1]));
  }
  const page = await get(`/v1/simulations/${pathPart(view.run)}/transcript?${params}`);
  append(page.rows);
  view.next = page.next_after_tick === null ? null : [page.next_after_tick, page.next_after_seq];
  $("sim-more").hidden = view.next === null;
  $("sim-summary").textContent = `${$("sim-timeline").querySelectorAll(".event").length} row(s)` +
    (view.next ? " shown; more below" : ", all committed rows");
}

async function show(event) {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button[type=submit]");
  busy(button, true);
  try {
    if (!form.elements.run.value) throw new ApiError(0, "client", "no readable run to show: refresh the list.");
    view = { run: form.elements.run.value, agent: form.elements.agent.value, next: null, lastTick: null, lanes: new Map() };
    const run = runs.find((r) => r.name === view.run);
    (run ? run.agents : []).forEach(laneOf); // a lane per resident, the same colours whichever agent is shown
    $("sim-timeline").replaceChildren();
    await loadPage();
    showError($("sim-error"), null);
  } catch (error) {
    showError($("sim-error"), error);
  } finally {
    busy(button, false);
  }
}

async function more() {
  const button = $("sim-more");
  busy(button, true);
  try {
    await loadPage();
  } catch (error) {
    showError($("sim-error"), error);
  } finally {
    busy(button, false);
  }
}

export function setupTimeline() {
  $("sim-form").addEventListener("submit", show);
  $("sim-run").addEventListener("change", runChanged);
  $("sim-refresh").addEventListener("click", refreshSimulations);
  $("sim-more").addEventListener("click", more);
}
