// The Repos tab: start indexing a repository folder (the server refuses paths outside its allowed roots),
// follow the jobs with a progress bar (files hashed of those found; parsed and unchanged beside it) until each
// is done or failed, and show the repository map ranked for a query.
//
// The list is the server's (GET /v1/repos/jobs: the latest job of each repository), so every tab and a reload
// show the same jobs; a job still queued or running is polled until it ends.

import { ApiError, get, pathPart, post } from "./api.js";
import { $, busy, el, formNumber, showError } from "./dom.js";

const POLL_MS = 500;
const jobs = new Map();
const polling = new Set();

function elapsed(job) {
  return ((job.finished_at || Date.now() / 1000) - (job.started_at || job.submitted_at)).toFixed(0);
}

function describe(job) {
  if (job.state === "failed") return `failed: ${job.error}`;
  const p = job.progress;
  if (job.state === "queued") return "queued behind another index run";
  if (job.state === "running" && !p) return `running · walking the folder · ${elapsed(job)} s`;
  const counts = p ? `${p.files_seen}/${p.files_total} files · ${p.files_parsed} parsed · ` +
    `${p.files_unchanged} unchanged · ${p.chunks} chunks` : "";
  if (job.state === "running") return `running · ${counts} · ${elapsed(job)} s`;
  const report = job.report || {};
  return `done in ${elapsed(job)} s · ${counts || `${report.num_files} files`} · ${report.num_removed ?? 0} removed` +
    (report.problems && Object.keys(report.problems).length ? ` · ${Object.keys(report.problems).length} with problems` : "");
}

function progressBar(job) {
  const p = job.progress;
  const label = `${job.path}: ${p ? `${p.files_seen} of ${p.files_total} files` : job.state}`;
  const bar = el("progress", { class: "job-bar", "aria-label": label });
  if (p && p.files_total > 0) { // no value: an indeterminate bar while the folder is walked
    bar.max = p.files_total;
    bar.value = p.files_seen;
  } else if (job.state === "done" || job.state === "failed") {
    bar.max = 1;
    bar.value = 1;
  }
  return bar;
}

function render() {
  const ordered = [...jobs.values()].sort((a, b) => b.submitted_at - a.submitted_at);
  $("repo-jobs").replaceChildren(...ordered.map((job) => el("li", { class: `job ${job.state}`, "data-id": job.id },
    el("strong", { text: job.path }), el("span", { class: "muted", text: ` → ${job.collection}` }),
    progressBar(job), el("div", { class: "job-state", text: describe(job) }))));
  const select = $("map-repo");
  const chosen = select.value;
  const done = ordered.filter((job) => job.state === "done");
  select.replaceChildren(...done.map((job) => el("option", { value: job.id, text: job.path })));
  if (done.some((job) => job.id === chosen)) select.value = chosen;
}

async function follow(id) {
  if (polling.has(id)) return;
  polling.add(id);
  try {
    for (;;) {
      const job = await get(`/v1/repos/${pathPart(id)}`);
      jobs.set(id, job);
      render();
      if (job.state !== "queued" && job.state !== "running") return;
      await new Promise((resolve) => { setTimeout(resolve, POLL_MS); });
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      jobs.delete(id); // the server restarted: jobs live in its memory only
      render();
    } else {
      showError($("repo-error"), error);
    }
  } finally {
    polling.delete(id);
  }
}

export async function refreshRepoJobs() {
  try {
    const listed = await get("/v1/repos/jobs?limit=100");
    jobs.clear();
    for (const job of listed) jobs.set(job.id, job);
    render();
    for (const job of listed) if (job.state === "queued" || job.state === "running") follow(job.id);
  } catch (error) {
    showError($("repo-error"), error);
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
  $("repo-refresh").addEventListener("click", refreshRepoJobs);
}
