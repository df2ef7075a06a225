// The Search tab: query, collection, mode, rerank, k and a metadata filter checked before anything is sent;
// results with scores, the query's words highlighted, metadata, and the per-stage timings bar.

import { ApiError, pathPart, post } from "./api.js";
import { refreshCollections } from "./collections.js";
import { $, busy, el, formNumber, showError, submitOnCtrlEnter } from "./dom.js";
import { highlightSegments } from "./highlight.js";
import { renderTimings } from "./timings.js";

// The filter box's text -> the filter object, null when empty; throws with what is wrong and where.
export function parseFilter(text) {
  if (!text.trim()) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ApiError(0, "client", `the filter is not valid JSON: ${error.message}. Nothing was sent.`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ApiError(0, "client", 'the filter must be a JSON object such as {"topic": "hnsw"}. Nothing was sent.');
  }
  return value;
}

export function requireCollection(form) {
  const name = form.elements.collection.value;
  if (!name) {
    throw new ApiError(0, "client", "there is no collection to use: create one in the Collections tab first.");
  }
  return name;
}

// A 404 for the chosen collection means this tab's list is stale: say so and refresh the pickers.
export async function explainStale(error, name) {
  if (error instanceof ApiError && error.code === "collection_not_found") {
    await refreshCollections();
    return new ApiError(error.status, error.code, `${error.message}. The collection "${name}" may have been ` +
      "deleted from another tab or client; the collection list has been refreshed.");
  }
  return error;
}

function checkFilterAsTyped() {
  const state = $("filter-state");
  const text = $("search-form").elements.filter.value;
  try {
    state.textContent = parseFilter(text) === null ? "" : "✓ a valid filter object";
    state.classList.remove("bad");
  } catch (error) {
    state.textContent = `✗ ${error.message.replace(" Nothing was sent.", "")}`;
    state.classList.add("bad");
  }
}

function renderHit(hit, query) {
  const text = el("p", { class: "hit-text" }, highlightSegments(hit.text, query).map((segment) =>
    segment.match ? el("mark", { text: segment.text }) : segment.text));
  const meta = Object.entries(hit.metadata || {}).map(([key, value]) =>
    el("span", { class: "chip", text: `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}` }));
  return el("li", { class: "hit" },
    el("div", { class: "hit-head" },
      el("span", { class: "doc", text: hit.document_id }),
      el("span", { class: "score", title: "score", text: hit.score.toFixed(4) })),
    text,
    meta.length ? el("div", { class: "chips" }, meta) : null);
}

async function search(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("search-error");
  const button = form.querySelector("button[type=submit]");
  let name = "";
  try {
    const query = form.elements.query.value.trim();
    if (!query) throw new ApiError(0, "client", "type a query first: an empty query searches for nothing.");
    name = requireCollection(form);
    const body = { query, k: formNumber(form, "k") ?? 5, mode: form.elements.mode.value };
    const filter = parseFilter(form.elements.filter.value);
    if (filter) body.filter = filter;
    if (form.elements.rerank.value) body.rerank = form.elements.rerank.value;
    busy(button, true);
    const result = await post(`/v1/collections/${pathPart(name)}/search`, body);
    showError(box, null);
    $("search-summary").textContent = `${result.hits.length} hit(s) from ${name} · served by ${result.served_by}` +
      (result.stages.length ? ` · stages ${result.stages.join(" → ")}` : "");
    renderTimings($("search-timings"), result.timings_ms);
    $("search-results").replaceChildren(...result.hits.map((hit) => renderHit(hit, query)));
  } catch (error) {
    showError(box, await explainStale(error, name));
  } finally {
    busy(button, false);
  }
}

export function setupSearch() {
  const form = $("search-form");
  form.addEventListener("submit", search);
  form.elements.filter.addEventListener("input", checkFilterAsTyped);
  submitOnCtrlEnter(form.elements.filter);
}
