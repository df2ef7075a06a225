// The Repos tab: start indexing a repository folder (the server refuses paths outside its allowed roots),
// follow the job until it is done or failed, and show the repository map ranked for a query.
//
// The API has no list of jobs, so the ids this tab started are remembered in sessionStorage. A job reports
// its state (queued, running, done, failed) and, once done, its report; there is no finer progress to show.

import { ApiError, get, pathPart, post } from "./api.js";
import { $, busy, el, formNumber, showError } from "./dom.js";

const JOBS_ITEM = "ragsvc.repoJobs";
const POLL_MS = 1000;
const jobs = new Map();

function rememberedIds() {
  try {
    const ids = JSON.parse(sessionStorage.getItem(JOBS_ITEM) || "[]");
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
  } catch {
    return [];
  }
}

function remember() {
  sessionStorage.setItem(JOBS_ITEM, JSON.stringify([...jobs.keys()]));
}

function describe(job) {
  const seconds = ((job.finished_at || Date.now() / 1000) - (job.started_at || job.submitted_at)).toFixed(0);
  if (job.state === "failed") return `failed: ${job.error}`;
  if (job.state !== "done") return `${job.state} · ${seconds} s`;
  const report = Object.entries(job.report || {}).filter(([, v]) => typeof v !== "object")
    .map(([k, v]) => `${k.replace(/^num_/, "")} ${v}`).join(" · ");
  return `done in ${seconds} s · ${report}`;
}

function render() {
  $("repo-jobs").replaceChildren(...[...jobs.values()].map((job) => el("li", { class: `job ${job.state}`, "data-id": job.id },
    el("strong", { text: job.path }), el("span", { class: "muted", text: ` → ${job.collection}` }),
    el("div", { class: "job-state", text: describe(job) }))));
  const select = $("map-repo");
  const chosen = select.value;
  const done = [...jobs.values()].filter((job) => job.state === "done");
  select.replaceChildren(...done.map((job) => el("option", { value: job.id, text: job.path })));
  if (done.some((job) => job.id === chosen)) select.value = chosen;
}

async function follow(id) {
  try {
    const job = await get(`/v1/repos/${pathPart(id)}`);
    jobs.set(id, job);
    render();
    if (job.state === "queued" || job.state === "running") setTimeout(() => follow(id), POLL_MS);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      jobs.delete(id); // the server restarted: jobs live in its memory only
      remember();
      render();
    } else {
      showError($("repo-error"), error);
    }
  }
}

async function start(event) {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button[type=submit]");
  const body = { path: form.elements.path.value.trim() };
  if (form.elements.collection.value.trim()) body.collection = form.elements.collection.value.trim();
  busy(button, true);
  try {
    if (!body.path) throw new ApiError(0, "client", "give the repository's folder on the server.");
    const job = await post("/v1/repos", body);
    showError($("repo-error"), null);
    jobs.set(job.id, job);
    remember();
    render();
    follow(job.id);
  } catch (error) {
    showError($("repo-error"), error);
  } finally {
    busy(button, false);
  }
}

async function showMap(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("map-error");
  const id = form.elements.repo.value;
  const button = form.querySelector("button[type=submit]");
  busy(button, true);
  try {
    if (!id) throw new ApiError(0, "client", "no indexed repository yet: index one above and wait until it is done.");
    const params = new URLSearchParams({ tokens: String(formNumber(form, "tokens") ?? 1024) });
    if (form.elements.query.value.trim()) params.set("query", form.elements.query.value.trim());
    const map = await get(`/v1/repos/${pathPart(id)}/map?${params}`);
    showError(box, null);
    $("map-summary").textContent = `${map.num_definitions} definition(s) in ${map.num_tokens} of ${map.max_tokens} tokens`;
    $("map-text").textContent = map.text;
  } catch (error) {
    showError(box, error);
  } finally {
    busy(button, false);
  }
}

export function setupRepos() {
  $("repo-form").addEventListener("submit", start);
  $("map-form").addEventListener("submit", showMap);
  for (const id of rememberedIds()) follow(id);
}
