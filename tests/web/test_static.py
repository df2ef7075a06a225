"""The console's files without a browser: they ship in the wheel, reference nothing outside the server, and the
API serves them (the page without a key, with a same-origin-only Content-Security-Policy) over real uvicorn."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from ragsvc.web import INDEX_FILE, STATIC_DIR
from tests.api.conftest import LiveServer, free_port, make_settings
from tests.test_package_data import _package_data, _shipped

FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_there_are_console_files():
    assert INDEX_FILE in FILES and any(p.suffix == ".js" for p in FILES) and any(p.suffix == ".css" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_each_console_file_is_package_data(path):
    assert _shipped(path, _package_data()), f"{path.name} is not matched by pyproject's package-data: add a glob"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_nothing_is_fetched_from_elsewhere(path):
    text = path.read_text(encoding="utf-8")
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.I) == []
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text


def test_every_script_the_page_imports_exists():
    scripts = STATIC_DIR / "js"
    for path in scripts.glob("*.js"):
        for imported in re.findall(r'from "\./([a-z_]+\.js)"', path.read_text(encoding="utf-8")):
            assert (scripts / imported).is_file(), f"{path.name} imports {imported}, which does not exist"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[str]:
    from ragsvc.api.app import create_app

    server = LiveServer(create_app(make_settings(tmp_path_factory.mktemp("console") / "data")), free_port())
    server.start()
    yield server.url
    server.stop()


def test_the_api_serves_the_page_and_its_files_without_a_key(api):
    with httpx.Client(base_url=api, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert client.head("/").status_code == 200
        sources = re.findall(r'(?:href|src)="([^":]+)"', page.text)  # relative: a path prefix proxy keeps working
        assert len(sources) >= 3 and not any(src.startswith("/") for src in sources), sources
        for src in sources:
            if src.startswith("console/"):
                assert client.get("/" + src).status_code == 200, src
        module = client.get("/console/js/main.js")
        assert "javascript" in module.headers["content-type"]
        assert client.get("/console/js/missing.js").status_code == 404
        assert client.get("/console/../pyproject.toml").status_code == 404
        assert "/" not in client.get("/openapi.json").json()["paths"]  # the API's document lists the API only


def test_the_page_loads_while_keys_are_on_and_the_api_still_needs_one(api):
    with httpx.Client(base_url=api, timeout=30) as client:
        client.post("/v1/keys", json={"name": "t", "scopes": ["admin"]}).raise_for_status()
        assert client.get("/").status_code == 200
        assert client.get("/console/js/api.js").status_code == 200
        denied = client.get("/v1/collections")
        assert denied.status_code == 401 and "needs an API key" in denied.json()["detail"]
