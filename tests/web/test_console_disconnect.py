"""The server going away in the middle of a streamed answer: the page says what happened, keeps what arrived,
and stays usable (other tabs, other requests, each failing with a message instead of a blank panel)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.web.conftest import ServeProcess, serving

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


@pytest.fixture()
def server(browser, tmp_path_factory) -> Iterator[ServeProcess]:
    with serving(tmp_path_factory, "doomed", with_model=True) as started:
        yield started


def test_a_server_killed_mid_answer_leaves_the_partial_answer_and_a_message(page, server):
    page.click("#tab-ask")
    form = page.locator("#ask-form")
    form.locator("[name=question]").fill("Explain paged attention, HNSW graphs and BM25 in detail.")
    form.locator("[name=max_tokens]").fill("1024")
    form.locator("[name=question]").press("Control+Enter")
    answer = page.locator("#ask-answer")
    expect(answer).to_have_attribute("data-text-events", re.compile(r"^[1-9]"), timeout=180_000)
    server.kill()
    expect(page.locator("#ask-error")).to_contain_text(re.compile("lost mid-stream|ended before"), timeout=60_000)
    expect(page.locator("#ask-status")).to_have_text("the answer did not finish.")
    expect(answer).not_to_be_empty()  # what arrived is kept
    expect(page.locator("#ask-form button[type=submit]")).to_be_enabled()
    expect(page.locator("#ask-stop")).to_be_disabled()
    page.click("#tab-search")  # the rest of the page still answers, and says the server is gone
    page.fill("#search-form [name=query]", "paged attention")
    page.press("#search-form [name=query]", "Enter")
    expect(page.locator("#search-error")).to_contain_text("cannot reach the server")
    page.click("#tab-collections")
    page.click("#collections-refresh")
    expect(page.locator("#collections-error")).to_contain_text("cannot reach the server")
