"""The console's simulation timeline, repo-job progress and path-prefix serving, in a real Chromium against the
shared real `ragsvc serve --sample --with-model`: a short scripted run (ScriptedGenerator: decisions a 135M model
cannot be relied on to make; MiniLM embeds) written under the server's runs root, a folder of this repository
indexed, and the whole page used through a reverse proxy that serves the app under /rag/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from ragsvc.agents.sim_config import SimulationConfig
from ragsvc.agents.simulation import TRANSCRIPT_FILE, run_simulation
from ragsvc.llm.scripted import ScriptedGenerator
from tests.agents.test_simulation import TOWN, town_reply
from tests.api.conftest import LiveServer, free_port
from tests.web.conftest import MODEL_TIMEOUT_MS, REPO, PageErrors, ServeProcess
from tests.web.prefix_proxy import PrefixProxy
from tests.web.test_console import SCREENSHOT_DIR_VARIABLE

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
RUN = "town-1h"
UTTERANCE = "Are you coming to the party?"
"""A line of the scripted conversation (tests/agents/test_simulation.py's town_reply)."""


@pytest.fixture(scope="module")
def server(model_server: ServeProcess) -> ServeProcess:
    return model_server


@pytest.fixture(scope="module")
def sim_run(server: ServeProcess, minilm) -> Path:
    """One simulated hour of the sample town, written into the server's runs root (<data dir>/simulations)."""
    out = server.data_dir / "simulations" / RUN
    config = SimulationConfig(hours=1.0, tick_minutes=15, seed=7, reflection_threshold=20.0)
    run_simulation(TOWN, out, config=config, generator=ScriptedGenerator(town_reply), embedder=minilm)
    return out


def show_run(page, agent: str = "") -> None:
    page.click("#tab-agents")
    expect(page.locator(f"#sim-run option[value='{RUN}']")).to_be_attached()
    page.select_option("#sim-run", RUN)
    page.select_option("#sim-agent", agent)
    page.click("#sim-form button[type=submit]")


def test_the_timeline_shows_the_runs_ticks_utterances_and_memories(page, sim_run):
    show_run(page)
    expect(page.locator("#sim-timeline li.tick")).to_have_count(4)
    expect(page.locator("#sim-timeline .tick-head").first).to_have_text("tick 0 · day 1 08:00")
    said = page.locator("#sim-timeline li.event", has=page.locator(".utterance", has_text=UTTERANCE)).first
    expect(said.locator(".chip").first).to_have_text("say")
    expect(page.locator("#sim-summary")).to_contain_text("all committed rows")
    rows = len(sim_run.joinpath(TRANSCRIPT_FILE).read_text().splitlines())
    expect(page.locator("#sim-timeline li.event")).to_have_count(rows)
    with_ids = page.locator("#sim-timeline li.event", has=page.locator("button.mem-id")).first
    button = with_ids.locator("button.mem-id").first
    button.focus()
    page.keyboard.press("Enter")  # the memory ids are buttons: the keyboard opens them too
    expect(with_ids.locator(".event-memory")).to_contain_text(button.inner_text())
    expect(button).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Enter")
    expect(with_ids.locator(".event-memory")).to_have_count(0)


def test_one_agents_lane_and_a_375_px_screen(browser, server, sim_run):
    agent = httpx.get(f"{server.url}/v1/simulations/{RUN}").json()["agents"][0]
    context = browser.new_context(viewport={"width": 375, "height": 800})
    errors = PageErrors()
    try:
        tab = context.new_page()
        errors.attach(tab)
        tab.goto(server.url + "/#agents")
        show_run(tab, agent)
        expect(tab.locator("#sim-timeline li.event").first).to_be_visible()
        actors = set(tab.locator("#sim-timeline .actor").all_inner_texts())
        assert actors == {agent}
        assert tab.evaluate("document.documentElement.scrollWidth") <= 375, "the timeline is wider than 375 px"
    finally:
        context.close()
    assert errors.errors == []


def test_a_missing_run_and_a_busy_server_say_what_happened(page, server, sim_run):
    show_run(page)
    expect(page.locator("#sim-timeline li.tick").first).to_be_visible()
    (server.data_dir / "simulations" / RUN).rename(server.data_dir / "simulations" / "moved")  # behind the tab
    try:
        page.click("#sim-form button[type=submit]")
        expect(page.locator("#sim-error")).to_contain_text(f"no simulation run '{RUN}'")
        page.click("#sim-refresh")
        expect(page.locator("#sim-run option[value=moved]")).to_be_attached()
    finally:
        (server.data_dir / "simulations" / "moved").rename(server.data_dir / "simulations" / RUN)


def test_repo_jobs_show_progress_and_come_from_the_servers_list(page, server):
    page.click("#tab-repos")
    page.fill("#repo-form [name=path]", "ragsvc/web")
    page.fill("#repo-form [name=collection]", "zz-console-web")
    page.press("#repo-form [name=collection]", "Enter")
    job = page.locator("#repo-jobs li.job", has_text="zz-console-web")
    expect(job).to_have_class(re.compile(r"\bdone\b"), timeout=MODEL_TIMEOUT_MS)
    listed = next(j for j in httpx.get(f"{server.url}/v1/repos/jobs").json() if j["collection"] == "zz-console-web")
    total = listed["progress"]["files_total"]
    assert total > 5 and listed["progress"]["files_seen"] == total
    expect(job.locator("progress")).to_have_js_property("max", total)
    expect(job.locator("progress")).to_have_js_property("value", total)
    expect(job.locator(".job-state")).to_contain_text(f"{total}/{total} files")
    page.reload()  # a new page load lists the server's jobs, not ones it remembered itself
    page.click("#tab-repos")
    expect(page.locator("#repo-jobs li.job", has_text="zz-console-web")).to_contain_text(f"{total}/{total} files")


def test_the_console_works_behind_a_path_prefix_proxy(browser, server, sim_run):
    proxy = PrefixProxy(server.url, "/rag")
    front = LiveServer(proxy, free_port())
    front.start(ready_path="/rag/health")
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    errors = PageErrors()
    try:
        tab = context.new_page()
        errors.attach(tab)
        tab.goto(front.url + "/rag/")
        expect(tab.locator("#collections-table tr[data-name=sample]")).to_be_visible()
        expect(tab.locator("#server-status")).to_have_text(re.compile(r"^v\d"))
        tab.click("#tab-search")
        tab.select_option("#search-form [name=collection]", "sample")
        tab.fill("#search-form [name=query]", "how does paged attention save memory?")
        tab.press("#search-form [name=query]", "Enter")
        expect(tab.locator("#search-results .doc").first).to_have_text("sample/paged-attention.md")
        show_run(tab)
        expect(tab.locator("#sim-timeline .utterance", has_text=UTTERANCE).first).to_be_visible()
        assert proxy.outside == [], f"the page asked for paths outside /rag/: {proxy.outside}"
    finally:
        context.close()
        front.stop()
    assert errors.errors == []


def test_screenshots_of_the_timeline_and_the_repo_jobs(browser, server, sim_run, tmp_path):
    """Kept under docs/ when RAGSVC_CONSOLE_SCREENSHOTS=docs (as test_console.py's screenshots are)."""
    out = Path(os.environ.get(SCREENSHOT_DIR_VARIABLE) or tmp_path)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        tab = context.new_page()
        tab.goto(server.url + "/")
        show_run(tab)
        said = tab.locator("#sim-timeline li.event", has=tab.locator(".utterance", has_text=UTTERANCE)).first
        with_ids = tab.locator("#sim-timeline li.event", has=tab.locator("button.mem-id")).nth(2)
        with_ids.locator("button.mem-id").first.click()
        expect(with_ids.locator(".event-memory")).to_be_visible()
        said.scroll_into_view_if_needed()
        tab.locator("#sim-form").scroll_into_view_if_needed()
        tab.screenshot(path=out / "console-timeline.png")
        tab.click("#tab-repos")
        tab.fill("#repo-form [name=path]", "ragsvc/code")
        tab.fill("#repo-form [name=collection]", "zz-console-code")
        tab.press("#repo-form [name=collection]", "Enter")
        expect(tab.locator("#repo-jobs li.job", has_text="zz-console-code")).to_have_class(re.compile(r"\bdone\b"),
                                                                                        timeout=MODEL_TIMEOUT_MS)
        tab.select_option("#map-repo", label=str(REPO / "ragsvc" / "code"))
        tab.fill("#map-form [name=query]", "how is a repository walked and parsed?")
        tab.press("#map-form [name=query]", "Enter")
        expect(tab.locator("#map-summary")).to_contain_text("definition(s)")
        # committed files carry no machine paths: the picture shows the server's folders under <checkout>
        tab.evaluate("""(root) => { for (const node of document.querySelectorAll("#repo-jobs strong, #map-repo option"))
            node.textContent = node.textContent.replace(root, "<checkout>"); }""", str(REPO))
        tab.screenshot(path=out / "console-repos.png")
    finally:
        context.close()
    for name in ("timeline", "repos"):
        assert (out / f"console-{name}.png").stat().st_size > 10_000, f"the {name} screenshot looks empty"
