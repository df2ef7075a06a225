// The Ask tab: a question answered over a collection, streamed as server-sent events. The answer grows as
// `text` events arrive; each retrieval and model call is listed under Rounds as it happens (with FLARE: the
// lowest token probability of each look-ahead against θ, and the query an unsure sentence became); when the
// final `answer` event comes, [n] markers become buttons that open their passage.

import { ApiError, stream } from "./api.js";
import { $, busy, el, formNumber, showError, submitOnCtrlEnter } from "./dom.js";
import { explainStale, requireCollection } from "./search.js";

let controller = null;

export function answerSegments(text, numbers) {
  // "see [2] and [9]" with passages {2} -> ["see ", {n: 2}, " and [9]"]: only markers of real passages link
  const parts = [];
  let last = 0;
  for (const found of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(found[1]);
    if (!numbers.has(n)) continue;
    if (found.index > last) parts.push(text.slice(last, found.index));
    parts.push({ n });
    last = found.index + found[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function openPassage(passage) {
  const panel = $("ask-passage");
  panel.replaceChildren(
    el("div", { class: "hit-head" }, el("strong", { text: `[${passage.number}] ${passage.document_id}` }),
      el("span", { class: "score", text: passage.score.toFixed(4) })),
    el("p", { class: "hit-text", text: passage.text }),
    el("button", { type: "button", text: "Close", onclick: () => { panel.hidden = true; } }));
  panel.hidden = false;
  panel.scrollIntoView({ block: "nearest" });
}

const FINISH_REASONS = {
  stop: "the model ended",
  length: "max tokens reached",
  rounds: "FLARE's rounds ran out",
  repetition: "cut where the model began repeating itself",
  no_passages: "no passage matched, so nothing was asked of the model",
};

/** Why an answer ended, in words; a reason this console does not know is shown as the API gave it. */
export function finishText(reason) {
  return Object.hasOwn(FINISH_REASONS, reason) ? FINISH_REASONS[reason] : String(reason);
}

function renderFinal(result) {
  const passages = new Map(result.passages.map((p) => [p.number, p]));
  const cited = new Set(result.citations.map((c) => c.number));
  $("ask-answer").replaceChildren(...answerSegments(result.answer, passages).map((part) =>
    typeof part === "string" ? part : el("button", { type: "button", class: "cite", "data-n": part.n,
      "aria-label": `open passage ${part.n}`, onclick: () => openPassage(passages.get(part.n)), text: `[${part.n}]` })));
  $("ask-sources").replaceChildren(...result.passages.map((p) => el("li", { class: cited.has(p.number) ? "cited" : "" },
    el("button", { type: "button", class: "source", "data-n": p.number, onclick: () => openPassage(p),
      text: `[${p.number}] ${p.document_id}` }),
    el("span", { class: "muted", text: ` ${p.score.toFixed(3)}${cited.has(p.number) ? " · cited" : ""}` }))));
  const usage = result.usage || {};
  $("ask-status").textContent = `done (${finishText(result.finish_reason)}) · ` +
    `${result.citations.length} citation(s) · ` +
    `${usage.prompt_tokens ?? 0} prompt tokens, ${usage.cached_tokens ?? 0} from the prefix cache · ` +
    `${(result.timings_ms?.total_ms ?? 0).toFixed(0)} ms`;
}

function roundLine(kind, data, theta) {
  if (kind === "retrieval") {
    const why = data.reason === "low_confidence" ? "unsure sentence → retrieval" : "retrieval for the question";
    return el("li", { class: data.reason === "low_confidence" ? "round low" : "round" },
      el("strong", { text: `round ${data.round} · ${why}` }),
      el("div", {}, "query: ", el("q", { text: data.query })),
      el("div", { class: "muted", text: `${data.hits.length} hit(s), added passage(s) ` +
        `${data.added.length ? data.added.map((n) => `[${n}]`).join(" ") : "none (already shown)"}` }));
  }
  const low = theta !== null && data.min_prob !== null && data.min_prob < theta;
  const prob = data.min_prob === null ? "" : ` · lowest token p=${data.min_prob.toFixed(3)}` +
    (theta === null ? "" : low ? ` < θ ${theta}` : ` ≥ θ ${theta}`);
  return el("li", { class: low ? "round low" : "round" },
    el("strong", { text: `round ${data.round} · ${data.kind}${prob}` }),
    el("div", { class: "muted", text: `${data.completion_tokens} token(s) · prompt ${data.prompt_tokens}, ` +
      `${data.cached_tokens} cached · first token ${data.ttft_ms.toFixed(0)} ms` }),
    (data.low_tokens ?? []).length
      ? el("div", { class: "low-tokens", text: `below θ: ${data.low_tokens.map((t) => `“${t}”`).join(" ")}` })
      : null);
}

function requestBody(form) {
  const question = form.elements.question.value.trim();
  if (!question) throw new ApiError(0, "client", "type a question first: an empty question cannot be answered.");
  const body = { question, collection: requireCollection(form), stream: true, mode: form.elements.mode.value,
    k: formNumber(form, "k") ?? 4, style: form.elements.style.value };
  const maxTokens = formNumber(form, "max_tokens");
  const theta = formNumber(form, "theta");
  if (form.elements.flare.checked) body.flare = { theta: theta ?? 0.4, max_tokens: maxTokens ?? 128 };
  else if (maxTokens !== null) body.max_tokens = maxTokens;
  return body;
}

async function ask(event) {
  event.preventDefault();
  const form = event.target;
  const box = $("ask-error");
  const button = form.querySelector("button[type=submit]");
  const answer = $("ask-answer");
  if (controller) { // Ctrl+Enter submits even while the button is disabled
    showError(box, new ApiError(0, "client", "an answer is still streaming: wait for it, or press Stop first."));
    return;
  }
  let body;
  try {
    body = requestBody(form);
  } catch (error) {
    showError(box, error);
    return;
  }
  const theta = body.flare ? body.flare.theta : null;
  showError(box, null);
  answer.replaceChildren();
  answer.dataset.textEvents = "0";
  $("ask-sources").replaceChildren();
  $("ask-rounds").replaceChildren();
  $("ask-passage").hidden = true;
  $("ask-status").textContent = "retrieving…";
  controller = new AbortController();
  busy(button, true);
  $("ask-stop").disabled = false;
  try {
    const result = await stream("/v1/answer", body, { finalKinds: ["answer"], signal: controller.signal,
      onEvent: (kind, data) => {
        if (kind === "text") {
          answer.append(data.text);
          answer.dataset.textEvents = String(Number(answer.dataset.textEvents) + 1);
          $("ask-status").textContent = "writing…";
        } else if (kind === "retrieval" || kind === "round") {
          $("ask-rounds").append(roundLine(kind, data, theta));
        }
      } });
    renderFinal(result);
  } catch (error) {
    if (error.name === "AbortError") {
      $("ask-status").textContent = "stopped by you; the partial answer is kept above.";
    } else {
      $("ask-status").textContent = "the answer did not finish.";
      showError(box, await explainStale(error, body.collection));
    }
  } finally {
    busy(button, false);
    $("ask-stop").disabled = true;
    controller = null;
  }
}

export function setupAsk() {
  const form = $("ask-form");
  form.addEventListener("submit", ask);
  submitOnCtrlEnter(form.elements.question);
  $("ask-stop").addEventListener("click", () => controller?.abort());
}
