// The Agents tab: pick an agent, chat in a session with the reply streamed, see the memories each reply was
// grounded in, and the agent's recent memory stream with importance (pending until the worker rates it).

import { ApiError, get, pathPart, post, stream } from "./api.js";
import { $, busy, el, showError } from "./dom.js";

let agents = [];
let session = null; // {id, agent}
let sending = false;

function chosenAgent() {
  return $("agent-select").value;
}

let loading = Promise.resolve(); // the list being fetched: a message sent meanwhile waits for it

export function refreshAgents() {
  loading = loadAgents();
  return loading;
}

async function loadAgents() {
  const box = $("agents-error");
  try {
    agents = await get("/v1/agents");
    showError(box, agents.length ? null : new Error("No agents yet: an admin creates one with POST /v1/agents " +
      "(a persona: name, age, traits, memories)."));
    const select = $("agent-select");
    const chosen = select.value;
    select.replaceChildren(...agents.map((a) => el("option", { value: a.id, text: `${a.persona.name} (${a.id})` })));
    if (agents.some((a) => a.id === chosen)) select.value = chosen;
    await agentChanged();
  } catch (error) {
    showError(box, error);
  }
}

async function agentChanged() {
  const agent = agents.find((a) => a.id === chosenAgent());
  $("agent-persona").textContent = agent ? `${agent.persona.summary || (agent.persona.traits || []).join(", ")} · ` +
    `${agent.num_memories} memories` : "";
  if (session && session.agent !== chosenAgent()) {
    session = null;
    $("chat-log").replaceChildren();
  }
  await Promise.all([refreshMemories(), refreshSessions()]);
}

async function refreshSessions() {
  const agent = chosenAgent();
  const select = $("session-select");
  const sessions = agent ? await get(`/v1/agents/${pathPart(agent)}/sessions?limit=50`).catch(() => []) : [];
  select.replaceChildren(el("option", { value: "", text: sessions.length ? "a past session…" : "no past sessions" }),
    ...sessions.map((s) => el("option", { value: s.id,
      text: `${s.created_at.slice(0, 16).replace("T", " ")} · ${s.user} · ${s.num_turns} turn(s)` })));
  select.value = session && sessions.some((s) => s.id === session.id) ? session.id : "";
}

async function reopen() {
  const id = $("session-select").value;
  if (!id) return;
  try {
    const history = await get(`/v1/sessions/${pathPart(id)}`);
    session = { id: history.id, agent: history.agent };
    const older = history.num_turns - history.turns.length;
    $("chat-log").replaceChildren(el("li", { class: "muted", text: `session ${history.id} with ${history.agent}`
      + (older > 0 ? ` · ${older} earlier turn(s) not shown` : "") }));
    for (const turn of history.turns) {
      const { item } = bubble(turn.role, turn.content);
      if (turn.role === "agent") item.append(el("div", { class: "muted", text: `${turn.memory_ids.length} memories used` }));
    }
    showError($("chat-error"), null);
  } catch (error) {
    showError($("chat-error"), error);
  }
}

export async function refreshMemories() {
  const agent = chosenAgent();
  if (!agent) {
    $("memory-stream").replaceChildren();
    return;
  }
  try {
    const memories = await get(`/v1/agents/${pathPart(agent)}/memories?limit=20`);
    $("memory-stream").replaceChildren(...memories.map((m) => el("li", { class: `memory kind-${m.kind}` },
      el("span", { class: "importance",
        title: m.importance === null ? "importance pending: a worker rates it shortly" : "importance, 1-10",
        text: m.importance === null ? "…" : m.importance.toFixed(0) }),
      el("span", { class: "chip", text: m.kind }), ` ${m.text}`,
      el("span", { class: "muted", text: ` · ${m.created_h.toFixed(1)} h` }))));
  } catch (error) {
    showError($("agents-error"), error);
  }
}

async function newSession(event) {
  event?.preventDefault();
  await loading; // the tab may have opened a moment ago: its agent list is still on its way
  const agent = chosenAgent();
  if (!agent) throw new ApiError(0, "client", "choose an agent first (none is registered yet).");
  const user = $("agent-pick").elements.user.value.trim() || "a visitor";
  const created = await post(`/v1/agents/${pathPart(agent)}/sessions`, { user });
  session = { id: created.id, agent };
  $("chat-log").replaceChildren(el("li", { class: "muted", text: `session ${created.id} with ${agent}` }));
  await refreshSessions();
  return session;
}

function bubble(role, text) {
  const body = el("div", { class: "bubble-text", text });
  const item = el("li", { class: `turn ${role}` }, el("div", { class: "who", text: role === "user" ? "you" : chosenAgent() }), body);
  $("chat-log").append(item);
  return { item, body };
}

function memoriesUsed(memories) {
  return el("details", { class: "used" }, el("summary", { text: `${memories.length} memor${memories.length === 1 ? "y" : "ies"} used` }),
    el("ol", {}, memories.map((m) => el("li", {}, el("span", { class: "chip", text: m.kind }),
      ` ${m.text} `, el("span", { class: "muted", text: `(score ${m.score.toFixed(2)})` })))));
}

async function send(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("chat-error");
  const button = form.querySelector("button[type=submit]");
  const content = form.elements.content.value.trim();
  if (!content) {
    showError(box, new ApiError(0, "client", "type a message first: an empty message is not sent."));
    return;
  }
  if (sending) {
    showError(box, new ApiError(0, "client", "the agent is still replying: send the next message when it is done."));
    return;
  }
  sending = true;
  busy(button, true);
  let reply = null;
  let replied = false;
  try {
    const current = session && session.agent === chosenAgent() ? session : await newSession();
    showError(box, null);
    bubble("user", content);
    form.elements.content.value = "";
    reply = bubble("agent", "");
    reply.item.classList.add("streaming");
    const result = await stream(`/v1/sessions/${pathPart(current.id)}/messages`, { content, stream: true },
      { finalKinds: ["reply"], onEvent: (kind, data) => {
        if (kind === "memories") reply.item.append(memoriesUsed(data.memories));
        else if (kind === "text") reply.body.append(data.text);
      } });
    reply.body.textContent = result.reply;
    reply.item.classList.remove("streaming");
    replied = true;
  } catch (error) {
    reply?.item.classList.replace("streaming", "broken");
    if (error instanceof ApiError && error.status === 404 && session) session = null; // start afresh next time
    showError(box, error);
  } finally {
    sending = false;
    busy(button, false);
  }
  // after the form is free again: a disabled Send button also blocks Enter, so a message typed while the
  // panels refresh would be dropped without a word
  if (replied) await Promise.all([refreshMemories(), refreshSessions()]).catch((error) => showError(box, error));
}

export function setupAgents() {
  $("agents-refresh").addEventListener("click", refreshAgents);
  $("agent-select").addEventListener("change", agentChanged);
  $("session-select").addEventListener("change", reopen);
  $("agent-pick").addEventListener("submit", (event) => newSession(event).catch((error) => showError($("chat-error"), error)));
  $("chat-form").addEventListener("submit", send);
}
