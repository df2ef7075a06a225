// Start the console: tabs (also reachable as #search, #ask, ... so a link or a reload keeps the tab), the
// API-key prompt the API layer calls on a 401, and the first loads.

import { apiUrl, setKeyPrompt } from "./api.js";
import { setupAgents, refreshAgents } from "./agents.js";
import { setupAsk } from "./ask.js";
import { refreshCollections, setupCollections } from "./collections.js";
import { $ } from "./dom.js";
import { refreshRepoJobs, setupRepos } from "./repos.js";
import { setupSearch } from "./search.js";
import { refreshSimulations, setupTimeline } from "./timeline.js";

const TABS = ["collections", "search", "ask", "agents", "repos"];
const loaded = new Set();

function showTab(name) {
  const tab = TABS.includes(name) ? name : "collections";
  for (const other of TABS) {
    $(`tab-${other}`).setAttribute("aria-selected", String(other === tab));
    $(`tab-${other}`).tabIndex = other === tab ? 0 : -1;
    $(`panel-${other}`).hidden = other !== tab;
  }
  if (tab === "agents" && !loaded.has(tab)) {
    loaded.add(tab);
    refreshAgents();
    refreshSimulations();
  }
  if (tab === "repos" && !loaded.has(tab)) {
    loaded.add(tab);
    refreshRepoJobs();
  }
}

function setupTabs() {
  for (const name of TABS) {
    $(`tab-${name}`).addEventListener("click", () => {
      history.replaceState(null, "", `#${name}`);
      showTab(name);
    });
  }
  // arrow keys move between tabs, as the ARIA tabs pattern has it
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const current = TABS.findIndex((name) => $(`tab-${name}`).getAttribute("aria-selected") === "true");
    const next = TABS[(current + step + TABS.length) % TABS.length];
    $(`tab-${next}`).click();
    $(`tab-${next}`).focus();
  });
  showTab(location.hash.slice(1));
}

function askForKey(reason) {
  const dialog = $("key-dialog");
  const form = $("key-form");
  $("key-reason").textContent = reason;
  form.reset();
  return new Promise((resolve) => {
    const done = (key) => {
      form.removeEventListener("submit", onSubmit);
      $("key-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      done(form.elements.key.value.trim() || null);
    };
    const onCancel = () => done(null);
    form.addEventListener("submit", onSubmit);
    $("key-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel); // Escape
    dialog.showModal();
  });
}

async function checkHealth() {
  const status = $("server-status");
  try {
    const response = await fetch(apiUrl("/health"), { cache: "no-store" });
    const body = await response.json();
    status.textContent = response.ok ? `v${body.version}` : `server ${body.status}: ${body.detail || "retry soon"}`;
  } catch {
    status.textContent = "server unreachable";
  }
}

setKeyPrompt(askForKey);
setupTabs();
setupCollections();
setupSearch();
setupAsk();
setupAgents();
setupTimeline();
setupRepos();
checkHealth();
refreshCollections();
