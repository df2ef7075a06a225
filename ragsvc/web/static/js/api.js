// The one door to the REST API: JSON requests and server-sent-event streams, the API key, and errors.
//
// The key the user enters is kept in sessionStorage: this tab only, gone when the tab closes, never in
// localStorage or a cookie. A 401 asks for a key (through the prompt main.js installs) and retries once per
// key given. Every failure becomes an ApiError whose message is the API's own `detail`.
//
// API paths are written as the API documents them ("/v1/collections") and resolved against where the console
// was served from, not the host's root: this module lives at <base>/console/js/api.js, so <base> is two
// folders up from it. Behind a proxy that serves the app under a path prefix (/rag/ -> the app's /), the page
// then calls /rag/v1/... and keeps working; served at the root, <base> is "/" and nothing changes.

import { SseParser } from "./sse.js";

const KEY_ITEM = "ragsvc.apiKey";
const MAX_KEY_PROMPTS = 3;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: no answer from the server at all
    this.code = code;
  }
}

const BASE = new URL("../../", import.meta.url);

// "/v1/x" -> <base>v1/x: an absolute URL under the folder the console was served from
export function apiUrl(path) {
  return new URL(path.replace(/^\/+/, ""), BASE).href;
}

let askForKey = async () => null;
let pendingPrompt = null;

export function setKeyPrompt(prompt) {
  askForKey = prompt;
}

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

async function promptForKey(reason) {
  // requests that meet a 401 together share one prompt
  if (!pendingPrompt) {
    pendingPrompt = askForKey(reason).finally(() => {
      pendingPrompt = null;
    });
  }
  const key = await pendingPrompt;
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  return key;
}

function unreachable(error) {
  return new ApiError(0, "unreachable", `cannot reach the server (${error.message}); it may have stopped. ` +
    "Start it again and retry: the page keeps working.");
}

export async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, an empty body): the status line says what there is to say
  }
  let message = `${response.status} ${response.statusText}`.trim();
  if (body && typeof body.detail === "string" && body.detail) message = body.detail;
  else if (body && body.detail) message = JSON.stringify(body.detail);
  else if (body && body.error && typeof body.error.message === "string") message = body.error.message;
  const code = body && typeof body.error === "string" ? body.error : "http_error";
  return new ApiError(response.status, code, `${message} (HTTP ${response.status})`);
}

async function send(method, path, { body, accept = "application/json", signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(apiUrl(path), { method, headers, signal, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw unreachable(error);
    }
    if (response.status !== 401 || attempt >= MAX_KEY_PROMPTS) return response;
    const error = await errorFrom(response);
    if (key) forgetKey(); // the stored key was refused: do not send it again
    if (!(await promptForKey(error.message))) throw error;
  }
}

export async function request(method, path, body) {
  const response = await send(method, path, { body });
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

// POST `body` (with stream: true) and call onEvent(kind, data) for each event as it arrives. Resolves with
// the final event's data (`answer`, `reply`); rejects with the in-band `error` as an ApiError, with an
// ApiError when the connection drops before the final event, or with an AbortError when `signal` fires.
export async function stream(path, body, { onEvent, finalKinds, signal }) {
  const response = await send("POST", path, { body, accept: "text/event-stream", signal });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "stream_lost", "the connection to the server was lost mid-stream " +
        `(${error.message}); what arrived is kept above. Retry when the server is back.`);
    }
    const events = parser.push(chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true }));
    for (const { kind, data } of events) {
      if (kind === "error") {
        throw new ApiError(data.status || 500, data.error || "error", `${data.detail || data.error} ` +
          `(in-band error, HTTP ${data.status || 500})`);
      }
      if (finalKinds.includes(kind)) return data;
      onEvent(kind, data);
    }
    if (chunk.done) {
      throw new ApiError(0, "stream_lost", "the stream ended before the server sent its final event: the " +
        "server stopped or the connection dropped. What arrived is kept above; retry when it is back.");
    }
  }
}

export function pathPart(value) {
  return encodeURIComponent(value);
}
