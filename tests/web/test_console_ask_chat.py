"""The console's streamed parts in a real Chromium against a real `ragsvc serve --sample --with-model`, where
SmolLM2 writes the answers and the agent's replies: ask (citations, FLARE rounds, Stop), chat (memories used, past
sessions) and repos."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.conftest import MODEL_TIMEOUT_MS, ServeProcess

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


@pytest.fixture(scope="module")
def server(model_server: ServeProcess) -> ServeProcess:
    return model_server


def test_ask_streams_the_answer_and_its_citations_open_their_passages(page):
    page.click("#tab-ask")
    form = page.locator("#ask-form")
    form.locator("[name=question]").fill("How does paged attention save memory?")
    form.locator("[name=max_tokens]").fill("48")
    form.locator("[name=style]").select_option("short")
    form.locator("[name=question]").press("Control+Enter")
    expect(page.locator("#ask-status")).to_contain_text("done", timeout=MODEL_TIMEOUT_MS)
    assert int(page.locator("#ask-answer").get_attribute("data-text-events")) > 1  # it arrived in pieces
    expect(page.locator("#ask-rounds")).to_contain_text("round 0 · retrieval for the question")
    expect(page.locator("#ask-sources li").first).to_contain_text("[1] sample/")
    cite = page.locator("#ask-answer button.cite").first
    expect(cite).to_be_visible()
    number = cite.get_attribute("data-n")
    cite.click()
    expect(page.locator("#ask-passage")).to_contain_text(f"[{number}] sample/")
    cited = page.locator("#ask-sources li.cited")
    expect(cited.first).to_be_visible()
    assert f"· {cited.count()} citation(s)" in page.inner_text("#ask-status")  # the API's count = the marked sources


def test_flare_rounds_are_listed_with_their_probabilities_and_queries(page):
    page.click("#tab-ask")
    form = page.locator("#ask-form")
    form.locator("[name=question]").fill("Why do generative agents reflect?")
    form.locator("[name=max_tokens]").fill("32")
    form.locator("[name=flare]").check()
    form.locator("[name=theta]").fill("0.9")
    form.locator("[name=question]").press("Control+Enter")
    expect(page.locator("#ask-status")).to_contain_text("done", timeout=MODEL_TIMEOUT_MS)
    rounds = page.locator("#ask-rounds li")
    expect(rounds.first).to_contain_text("query: Why do generative agents reflect?")
    lookahead = page.locator("#ask-rounds li", has_text="lookahead").first
    expect(lookahead).to_contain_text(re.compile(r"lowest token p=0\.\d+"))
    lows = page.locator("#ask-rounds li.low", has_text="< θ 0.9")
    assert lows.count() >= 1  # with θ this high some token falls below it: the round is marked and retrieves
    expect(lows.first.locator(".low-tokens")).to_contain_text(re.compile(r"below θ: “[^”]+”"))  # which tokens
    expect(page.locator("#ask-rounds li", has_text="unsure sentence → retrieval").first).to_be_visible()


def test_ask_without_a_question_says_so(page):
    page.click("#tab-ask")
    page.locator("#ask-form [name=question]").press("Control+Enter")
    expect(page.locator("#ask-error")).to_contain_text("type a question first")


def test_chat_with_an_agent_streams_the_reply_and_shows_the_memories_it_used(page):
    page.click("#tab-agents")
    expect(page.locator("#agent-select option[value=ada]")).to_be_attached()
    expect(page.locator("#memory-stream")).to_contain_text("Earl Grey")
    expect(page.locator("#memory-stream .importance").first).to_be_visible()
    page.fill("#chat-form [name=content]", "What do you like to drink?")
    page.press("#chat-form [name=content]", "Enter")
    reply = page.locator("#chat-log li.turn.agent")
    expect(reply).not_to_have_class(re.compile("streaming"), timeout=MODEL_TIMEOUT_MS)
    expect(reply.locator(".bubble-text")).not_to_be_empty()
    expect(reply.locator("details.used summary")).to_contain_text(re.compile(r"\d+ memor"))
    expect(page.locator("#memory-stream .kind-chat").first).to_contain_text("What do you like to drink?")
    page.fill("#chat-form [name=content]", " ")
    page.press("#chat-form [name=content]", "Enter")
    expect(page.locator("#chat-error")).to_contain_text("type a message first")


def test_a_past_session_reopens_with_its_turns_and_goes_on(page, server):
    with httpx.Client(base_url=server.url, timeout=MODEL_TIMEOUT_MS / 1000) as client:
        session = client.post("/v1/agents/ada/sessions", json={"user": "Grace"}).json()["id"]
        client.post(f"/v1/sessions/{session}/messages", json={"content": "Do you like tea?", "max_tokens": 8}
                    ).raise_for_status()
        page.click("#tab-agents")
        expect(page.locator(f"#session-select option[value='{session}']")).to_contain_text("Grace · 2 turn(s)")
        page.select_option("#session-select", session)
        expect(page.locator("#chat-log li.turn.user")).to_contain_text("Do you like tea?")
        expect(page.locator("#chat-log li.turn.agent")).to_contain_text("memories used")
        page.fill("#chat-form [name=content]", "And coffee?")
        page.press("#chat-form [name=content]", "Enter")
        expect(page.locator("#chat-log li.turn.agent").last).not_to_have_class(re.compile("streaming"),
                                                                                timeout=MODEL_TIMEOUT_MS)
        assert client.get(f"/v1/sessions/{session}").json()["num_turns"] == 4  # the same session went on


def test_repos_index_a_folder_under_the_allowed_root_and_refuse_one_outside(page):
    page.click("#tab-repos")
    page.fill("#repo-form [name=path]", "/etc")
    page.press("#repo-form [name=path]", "Enter")
    expect(page.locator("#repo-error")).to_contain_text("HTTP 400")
    page.fill("#repo-form [name=path]", "tests/code/fixtures/polyglot")
    page.fill("#repo-form [name=collection]", "repo-polyglot")
    page.press("#repo-form [name=collection]", "Enter")
    expect(page.locator("#repo-jobs li.job.done")).to_contain_text("done in", timeout=MODEL_TIMEOUT_MS)
    page.press("#map-form [name=query]", "Enter")
    expect(page.locator("#map-summary")).to_contain_text("definition(s)")
    expect(page.locator("#map-text")).not_to_be_empty()


def test_stop_keeps_the_partial_answer_and_the_next_question_is_answered(page):
    page.click("#tab-ask")
    form = page.locator("#ask-form")
    form.locator("[name=question]").fill("Explain paged attention, HNSW graphs and BM25 in detail.")
    form.locator("[name=max_tokens]").fill("1024")
    form.locator("[name=question]").press("Control+Enter")
    expect(page.locator("#ask-answer")).to_have_attribute("data-text-events", re.compile(r"^[1-9]"),
                                                          timeout=MODEL_TIMEOUT_MS)
    form.locator("[name=question]").press("Control+Enter")  # a second submit while streaming is refused
    expect(page.locator("#ask-error")).to_contain_text("still streaming")
    page.click("#ask-stop")
    expect(page.locator("#ask-status")).to_have_text("stopped by you; the partial answer is kept above.")
    expect(page.locator("#ask-answer")).not_to_be_empty()
    form.locator("[name=max_tokens]").fill("8")
    form.locator("[name=question]").press("Control+Enter")
    expect(page.locator("#ask-status")).to_contain_text("done", timeout=MODEL_TIMEOUT_MS)
    expect(page.locator("#ask-error")).to_be_hidden()
