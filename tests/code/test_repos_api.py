"""POST /v1/repos -> background job -> status -> map, against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    allowed = tmp_path_factory.mktemp("repos")
    shutil.copytree(Path(__file__).parent / "fixtures" / "polyglot", allowed / "polyglot")
    return allowed


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, roots: Path) -> Iterator[httpx.Client]:
    from ragsvc.api.app import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("api") / "data"))  # the app includes repos.router
    app.state.repo_roots = (roots,)
    server = LiveServer(app, free_port())
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
    server.stop()


def _wait_done(client: httpx.Client, repo_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # polls the job's state, as an API client would
        body = client.get(f"/v1/repos/{repo_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {repo_id} not finished in {timeout_s} s: {body}")


def test_index_then_status_then_map(client: httpx.Client, roots: Path) -> None:
    response = client.post("/v1/repos", json={"path": str(roots / "polyglot")})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("queued", "running") and job["collection"] == "repo-polyglot"
    done = _wait_done(client, job["id"])
    assert done["state"] == "done", done
    assert done["report"]["num_files"] == 10 and done["report"]["num_chunks"] > 20
    assert done["report"]["problems"] == {"pkg/broken.py": ["syntax error: missing ')' at line 5"]}

    repo_map = client.get(f"/v1/repos/{job['id']}/map", params={"tokens": 40}).json()
    assert repo_map["num_tokens"] <= 40 and repo_map["text"].startswith("pkg/core.py:")
    focused = client.get(f"/v1/repos/{job['id']}/map", params={"tokens": 40, "query": "join path parts in Go"})
    assert focused.status_code == 200 and "go/server.go" in focused.json()["text"]
    hits = client.post("/v1/collections/repo-polyglot/search",
                       json={"query": "join two strings with a slash", "k": 1, "filter": {"language": "go"}}).json()
    assert hits["hits"][0]["metadata"]["symbol"] == "Join"

    again = _wait_done(client, client.post("/v1/repos", json={"path": str(roots / "polyglot")}).json()["id"])
    assert again["report"]["num_parsed"] == 0 and again["report"]["num_unchanged"] == 10


def test_bad_paths_are_400_and_unknown_ids_404(client: httpx.Client, roots: Path, tmp_path: Path) -> None:
    missing = client.post("/v1/repos", json={"path": str(roots / "nope")})
    assert missing.status_code == 400 and "does not exist" in missing.json()["detail"]
    outside = client.post("/v1/repos", json={"path": str(tmp_path)})
    assert outside.status_code == 400 and "outside the allowed roots" in outside.json()["detail"]
    climbing = client.post("/v1/repos", json={"path": str(roots / "polyglot" / ".." / "..")})
    assert climbing.status_code == 400
    assert client.post("/v1/repos", json={}).status_code == 400
    assert client.get("/v1/repos/0123456789abcdef").status_code == 404
    assert client.get("/v1/repos/0123456789abcdef/map").status_code == 404
