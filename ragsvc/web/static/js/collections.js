// The Collections tab: the list (counts, index layout, the index's memory as the server measures it), create,
// delete with a confirmation.
// It also owns the collection pickers of the other tabs, refreshed whenever the list is.

import { ApiError, del, get, pathPart, post } from "./api.js";
import { $, busy, el, formatBytes, showError } from "./dom.js";

export function describeIndex(index) {
  const parts = [index.backend, index.metric];
  if (index.num_shards > 1) parts.push(`${index.num_shards} shards`);
  if (index.dims) parts.push(`d'=${index.dims}, rescore ${index.rescore_dtype}`);
  if (index.backend === "hnsw" || index.backend === "faiss_hnsw") parts.push(`M=${index.hnsw_m}`);
  if (index.prefix_quant && index.prefix_quant !== "none") parts.push(index.prefix_quant);
  return parts.join(" · ");
}

let names = [];
const listeners = [];

export function onCollections(listener) {
  listeners.push(listener);
}

function fillPickers() {
  for (const picker of document.querySelectorAll("select.collection-picker")) {
    const chosen = picker.value;
    picker.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
    if (names.includes(chosen)) picker.value = chosen;
  }
}

export async function refreshCollections() {
  const box = $("collections-error");
  try {
    const collections = await get("/v1/collections");
    showError(box, null);
    names = collections.map((c) => c.name);
    renderTable(collections);
    fillPickers();
    listeners.forEach((listener) => listener(names));
  } catch (error) {
    showError(box, error);
  }
}

function renderTable(collections) {
  $("collections-table").tBodies[0].replaceChildren(...collections.map((c) => el("tr", { "data-name": c.name },
    el("td", { "data-label": "name" }, el("strong", { text: c.name })),
    el("td", { "data-label": "documents", text: c.num_documents }),
    el("td", { "data-label": "chunks", text: c.num_chunks }),
    el("td", { "data-label": "embedder", text: `${c.embedder_id} (${c.dim} d)` }),
    el("td", { "data-label": "index", text: describeIndex(c.index) }),
    el("td", { "data-label": "index memory", text: c.index_bytes === null ? "–" : formatBytes(c.index_bytes) }),
    el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Delete ${c.name}`,
      onclick: () => confirmDelete(c), text: "Delete" })))));
  $("collections-empty").hidden = collections.length > 0;
}

function confirm(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "no";
    dialog.showModal();
    $("confirm-no").focus();
  });
}

async function confirmDelete(c) {
  const sure = await confirm(`Delete the collection "${c.name}" with its ${c.num_documents} document(s) and ` +
    `${c.num_chunks} chunk(s)? This cannot be undone.`);
  if (!sure) return;
  try {
    await del(`/v1/collections/${pathPart(c.name)}`);
  } catch (error) {
    showError($("collections-error"), error);
    return;
  }
  await refreshCollections();
}

function parseIndexJson(text) {
  if (!text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ApiError(0, "client", `the index settings are not valid JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ApiError(0, "client", 'the index settings must be a JSON object, e.g. {"num_shards": 2}');
  }
  return value;
}

async function create(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("create-error");
  const button = form.querySelector("button[type=submit]");
  try {
    const index = { backend: form.elements.backend.value, ...parseIndexJson(form.elements.index_json.value) };
    busy(button, true);
    await post("/v1/collections", { name: form.elements.name.value.trim(), index,
      chunk_tokens: Number(form.elements.chunk_tokens.value) });
    showError(box, null);
    form.reset();
    await refreshCollections();
  } catch (error) {
    showError(box, error);
  } finally {
    busy(button, false);
  }
}

export function setupCollections() {
  $("collections-refresh").addEventListener("click", refreshCollections);
  $("create-form").addEventListener("submit", create);
}
