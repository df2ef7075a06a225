"""The console's browser tests: a real `ragsvc serve` subprocess on 127.0.0.1 and Debian's Chromium, headless,
driven by Playwright's sync API.

Playwright's own browser download needs the internet, so the tests launch the system browser
(`apt-get install chromium`) and skip, saying so, when there is none or Playwright is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port
from tests.llm.conftest import MODEL_CACHE

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
NO_BROWSER = ("no Chromium to drive: install Debian's with `apt-get install chromium` and Playwright's Python "
              "package with `pip install playwright` (its own browser download is not needed)")


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class ServeProcess:
    """`ragsvc serve --sample` in a child process (the command users run), ready once /health answers 200."""

    def __init__(self, data_dir: Path, *, with_model: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self.command = [sys.executable, "-c", "from ragsvc.cli import main; main()", "serve", "--sample",
                        "--port", str(self.port), "--data-dir", str(data_dir)]
        if with_model:
            self.command.append("--with-model")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 600.0) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false",
               "RAGSVC_MODEL__CACHE_DIR": str(MODEL_CACHE)}  # the converted SmolLM2 the other suites share
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:  # waits for readiness (ingest, model load), not for time to pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ragsvc serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ragsvc serve not ready within {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server goes away at once, mid-request, as a crash or a pulled plug would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; skips every console test where Playwright or Chromium is missing."""
    pytest.importorskip("playwright.sync_api", reason=NO_BROWSER)
    executable = chromium_path()
    if executable is None:
        pytest.skip(NO_BROWSER)
    return executable


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[object]:
    """One browser per module, not per session: while Playwright's sync API is open, its event loop counts as
    running in this thread, and any later test in the same worker that calls `asyncio.run` would fail."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@contextmanager
def serving(tmp_path_factory: pytest.TempPathFactory, name: str, *, with_model: bool) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path_factory.mktemp(name) / "data", with_model=with_model)
    server.start()
    try:
        yield server
    finally:
        server.stop()


MODEL_TIMEOUT_MS = 300_000
"""How long a test waits for SmolLM2 on a shared CPU: generous, so a slow machine does not fail a behaviour test."""
PERSONA = {"id": "ada", "name": "Ada Lovelace", "age": 36, "traits": ["curious", "precise"],
           "summary": "a mathematician who writes about engines",
           "memories": ["My favourite tea is Earl Grey.", "I wrote notes on the Analytical Engine."]}


@pytest.fixture(scope="session")
def model_server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`ragsvc serve --sample --with-model` (SmolLM2 in process) with one agent, Ada, for the console tests."""
    with serving(tmp_path_factory, "console", with_model=True) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post("/v1/agents", json=PERSONA).raise_for_status()
        yield server


@pytest.fixture(scope="session")
def plain_server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`ragsvc serve --sample` without a model, shared by the key tests (which turn keys on: every API call
    needs one afterwards) and the script tests (which only load the console's modules, all public)."""
    with serving(tmp_path_factory, "plain", with_model=False) as server:
        yield server


class PageErrors:
    """Uncaught exceptions in the page: a test fails on them, since a script error is a blank panel to a user."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: object) -> None:
        page.on("pageerror", lambda error: self.errors.append(str(error)))  # type: ignore[attr-defined]


@pytest.fixture()
def page(browser: object, server: ServeProcess) -> Iterator[object]:
    """A fresh tab (its own sessionStorage) on the module's `server`, with the console loaded; fails the test on
    an uncaught script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(60_000)
    tab = context.new_page()
    errors = PageErrors()
    errors.attach(tab)
    tab.goto(server.url + "/")
    yield tab
    context.close()
    assert errors.errors == [], f"the page threw: {errors.errors}"
