"""The console in a real Chromium against a real `ragsvc serve --sample --with-model`: the page, collections
and search, what the page says when the input or the API refuses, the layout at 375 px, and the screenshots."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import MODEL_TIMEOUT_MS, ServeProcess

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


@pytest.fixture(scope="module")
def server(model_server: ServeProcess) -> ServeProcess:
    return model_server


def search_for(page, query: str, collection: str | None = "sample") -> None:
    page.click("#tab-search")
    if collection is not None:
        page.select_option("#search-form [name=collection]", collection)
    page.fill("#search-form [name=query]", query)
    page.press("#search-form [name=query]", "Enter")


def test_the_page_loads_without_a_key_and_lists_the_collections(page, server):
    response = httpx.get(server.url + "/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "default-src 'self'" in response.headers["content-security-policy"]
    row = page.locator("#collections-table tr[data-name=sample]")
    expect(row).to_be_visible()
    expect(row.locator("td[data-label=documents]")).to_have_text("12")
    expect(row.locator("td[data-label=index]")).to_contain_text("hnsw")
    measured = httpx.get(server.url + "/v1/collections/sample").json()["index_bytes"]
    expect(row.locator("td[data-label='index memory']")).to_have_text(f"{measured / 1024:.1f} KiB")
    expect(page.locator("#server-status")).to_have_text(re.compile(r"^v\d"))


def test_search_shows_the_known_top_hit_with_scores_highlights_metadata_and_timings(page):
    search_for(page, "how does paged attention save memory?")
    first = page.locator("#search-results li.hit").first
    expect(first.locator(".doc")).to_have_text("sample/paged-attention.md")
    expect(first.locator(".score")).to_have_text(re.compile(r"^\d\.\d{4}$"))
    expect(first.locator("mark").first).to_be_visible()
    marked = {text.lower() for text in first.locator("mark").all_inner_texts()}
    assert {"paged", "attention", "memory"} <= marked
    expect(first.locator(".chip", has_text="topic: paged-attention")).to_be_visible()
    expect(page.locator("#search-timings .seg").first).to_be_attached()
    expect(page.locator("#search-timings .legend")).to_contain_text("dense")
    expect(page.locator("#search-summary")).to_contain_text("dense → lexical → fuse")


def test_a_metadata_filter_is_sent_and_narrows_the_hits(page):
    page.click("#tab-search")
    page.fill("#search-form [name=filter]", '{"topic": "hnsw"}')
    expect(page.locator("#filter-state")).to_contain_text("valid filter")
    search_for(page, "graph search")
    expect(page.locator("#search-results li.hit").first).to_be_visible()
    assert set(page.locator("#search-results .doc").all_inner_texts()) == {"sample/hnsw.md"}


def test_bad_search_input_is_refused_in_the_page_and_nothing_is_sent(page):
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if "/search" in request.url else None)
    search_for(page, "   ")
    expect(page.locator("#search-error")).to_contain_text("type a query first")
    page.fill("#search-form [name=filter]", '{"topic": hnsw}')
    expect(page.locator("#filter-state")).to_contain_text("not valid JSON")
    search_for(page, "paged attention")
    expect(page.locator("#search-error")).to_contain_text("the filter is not valid JSON")
    page.fill("#search-form [name=filter]", '["topic"]')
    search_for(page, "paged attention")
    expect(page.locator("#search-error")).to_contain_text("must be a JSON object")
    assert sent == []
    page.fill("#search-form [name=filter]", "")  # the page stays usable: fix the input and search again
    search_for(page, "paged attention")
    expect(page.locator("#search-results .doc").first).to_have_text("sample/paged-attention.md")
    expect(page.locator("#search-error")).to_be_hidden()


def test_an_api_error_is_shown_with_the_apis_own_message(page):
    page.click("#tab-search")
    page.select_option("#search-form [name=rerank]", "cross-encoder")
    search_for(page, "paged attention")
    expect(page.locator("#search-error")).to_contain_text("reranker 'cross-encoder' is not available here")
    expect(page.locator("#search-error")).to_contain_text("HTTP 400")


def test_a_collection_deleted_behind_a_stale_tab_is_explained_and_the_list_refreshed(page, server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/v1/collections", json={"name": "soon-gone"}).raise_for_status()
        client.post("/v1/collections/soon-gone/documents", json={"documents": [{"text": "ephemeral"}]}
                    ).raise_for_status()
        page.click("#collections-refresh")
        expect(page.locator("#collections-table tr[data-name=soon-gone]")).to_be_visible()
        search_for(page, "ephemeral", collection="soon-gone")
        expect(page.locator("#search-results .doc").first).to_be_visible()
        client.delete("/v1/collections/soon-gone").raise_for_status()  # another client, while this tab is open
    search_for(page, "ephemeral", collection=None)
    expect(page.locator("#search-error")).to_contain_text("'soon-gone' does not exist")
    expect(page.locator("#search-error")).to_contain_text("list has been refreshed")
    expect(page.locator("#search-form [name=collection] option[value=soon-gone]")).to_have_count(0)
    search_for(page, "paged attention")  # the page is still usable
    expect(page.locator("#search-results .doc").first).to_have_text("sample/paged-attention.md")


def test_create_and_delete_a_collection_with_a_confirmation(page, server):
    form = page.locator("#create-form")
    form.locator("[name=name]").fill("made-here")
    form.locator("[name=index_json]").fill('{"num_shards": 2')
    form.locator("[name=name]").press("Enter")
    expect(page.locator("#create-error")).to_contain_text("not valid JSON")
    assert httpx.get(server.url + "/v1/collections/made-here").status_code == 404  # nothing was written
    form.locator("[name=index_json]").fill('{"num_shards": 2}')
    form.locator("[name=name]").press("Enter")
    row = page.locator("#collections-table tr[data-name=made-here]")
    expect(row.locator("td[data-label=index]")).to_contain_text("2 shards")
    form.locator("[name=name]").fill("sample")
    form.locator("[name=name]").press("Enter")
    expect(page.locator("#create-error")).to_contain_text("HTTP 409")
    row.get_by_role("button", name="Delete made-here").click()
    expect(page.locator("#confirm-dialog")).to_contain_text('Delete the collection "made-here"')
    page.click("#confirm-no")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete made-here").click()
    page.click("#confirm-yes")
    expect(row).to_have_count(0)
    assert httpx.get(server.url + "/v1/collections/made-here").status_code == 404


def test_tabs_work_from_the_keyboard_and_the_page_fits_375_px(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    try:
        tab = context.new_page()
        tab.goto(server.url + "/")
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        for name in ("collections", "search", "ask", "agents", "repos"):  # every tab in view, none cut off
            box = tab.locator(f"#tab-{name}").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, name
        tab.focus("#tab-collections")
        for name in ("search", "ask", "agents", "repos"):
            tab.keyboard.press("ArrowRight")
            expect(tab.locator(f"#tab-{name}")).to_have_attribute("aria-selected", "true")
            expect(tab.locator(f"#panel-{name}")).to_be_visible()
            assert tab.evaluate("document.documentElement.scrollWidth") <= 375, f"the {name} tab is wider than 375 px"
        tab.locator("#tab-search").click()
        tab.select_option("#search-form [name=collection]", "sample")
        tab.fill("#search-form [name=query]", "how does paged attention save memory?")
        tab.press("#search-form [name=query]", "Enter")
        expect(tab.locator("#search-results .doc").first).to_have_text("sample/paged-attention.md")
        assert tab.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()


SCREENSHOT_DIR_VARIABLE = "RAGSVC_CONSOLE_SCREENSHOTS"
"""Set to a folder (docs/) to keep the screenshots; the README shows the committed ones."""


def test_screenshots_of_each_tab(browser, server, tmp_path):
    out = Path(os.environ.get(SCREENSHOT_DIR_VARIABLE) or tmp_path)
    context = browser.new_context(viewport={"width": 1100, "height": 860})
    try:
        tab = context.new_page()
        tab.goto(server.url + "/")
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        tab.screenshot(path=out / "console-collections.png")
        search_for(tab, "how does paged attention save memory?")
        expect(tab.locator("#search-results .doc").first).to_have_text("sample/paged-attention.md")
        tab.screenshot(path=out / "console-search.png")
        tab.click("#tab-ask")
        tab.fill("#ask-form [name=question]", "How does paged attention save memory?")
        tab.fill("#ask-form [name=max_tokens]", "48")
        tab.select_option("#ask-form [name=style]", "short")
        tab.check("#ask-form [name=flare]")
        tab.press("#ask-form [name=question]", "Control+Enter")
        expect(tab.locator("#ask-status")).to_contain_text("done", timeout=MODEL_TIMEOUT_MS)
        tab.locator("#ask-sources button.source").first.click()
        tab.screenshot(path=out / "console-ask.png", full_page=True)
        tab.click("#tab-agents")
        tab.fill("#chat-form [name=content]", "Hello Ada, what are you working on?")
        tab.press("#chat-form [name=content]", "Enter")
        expect(tab.locator("#chat-log li.turn.agent").last).not_to_have_class(re.compile("streaming"),
                                                                               timeout=MODEL_TIMEOUT_MS)
        tab.locator("#chat-log details.used summary").last.click()
        tab.screenshot(path=out / "console-agents.png")
        tab.set_viewport_size({"width": 375, "height": 760})
        tab.click("#tab-search")
        tab.screenshot(path=out / "console-search-375.png")
    finally:
        context.close()
    for name in ("collections", "search", "ask", "agents", "search-375"):
        assert (out / f"console-{name}.png").stat().st_size > 10_000, f"the {name} screenshot looks empty"
