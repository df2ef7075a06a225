"""Progress of a repository index run: the indexer's counts per file and per written batch, a job carrying the
last of them, and GET /v1/repos/jobs listing jobs with their progress over a real uvicorn (real MiniLM, the
polyglot fixture repository)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from ragsvc.code.indexer import IndexProgress, RepoIndexer
from ragsvc.code.jobs import RepoJobs
from ragsvc.code.walker import WalkConfig
from ragsvc.retrieval.vector_store import VectorStore
from tests.api.conftest import LiveServer, free_port, make_settings
from tests.code.test_indexer import CountingEmbedder

pytestmark = pytest.mark.slow  # a real server (and MiniLM) per module


@pytest.fixture()
def store(tmp_path: Path, minilm) -> Iterator[VectorStore]:
    vector_store = VectorStore(tmp_path / "data", embedder=minilm)
    yield vector_store
    vector_store.close()


def test_stages_count_every_file_and_end_at_the_totals(store: VectorStore, polyglot: Path) -> None:
    seen: list[IndexProgress] = []
    report = RepoIndexer(store, batch_files=3).index(polyglot, stages=seen.append)
    assert [p.files_seen for p in seen[:-1]] == list(range(1, report.num_files + 1))  # one per file, then the end
    assert all(p.files_total == report.num_files for p in seen)
    assert all(a.files_parsed <= b.files_parsed and a.chunks <= b.chunks for a, b in zip(seen, seen[1:], strict=False))
    assert all(p.files_parsed + p.files_unchanged <= p.files_seen for p in seen)
    assert 0 < seen[len(seen) // 2].files_parsed < report.num_parsed  # written batch by batch, not at the end
    assert seen[-1] == IndexProgress(report.num_files, report.num_files, report.num_parsed, report.num_unchanged,
                                     report.num_chunks)


def test_a_job_keeps_its_last_progress_and_a_rerun_counts_unchanged_files(store: VectorStore,
                                                                          polyglot: Path) -> None:
    jobs = RepoJobs(RepoIndexer(store, walk_config=WalkConfig(allowed_roots=(polyglot.parent,))))
    try:
        first = jobs.wait(jobs.submit(str(polyglot)).id, timeout_s=300)
        assert first.state == "done" and first.progress is not None
        assert first.progress.files_seen == first.progress.files_total == first.report["num_files"]
        again = jobs.wait(jobs.submit(str(polyglot)).id, timeout_s=300)
        assert again.progress is not None and again.progress.files_parsed == 0
        assert again.progress.files_unchanged == again.progress.files_total
        assert [j.id for j in jobs.recent()] == [again.id]
    finally:
        jobs.close()


class GatedEmbedder(CountingEmbedder):
    """The real MiniLM, holding its second embedding call until the test lets it go: the job is then mid-run,
    with one write batch done, for as long as the test looks at it."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.calls = 0
        self.reached, self.release = threading.Event(), threading.Event()

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            self.reached.set()
            assert self.release.wait(timeout=300), "the test never released the second batch"
        return super().embed_documents(texts, progress=progress)


def test_a_running_job_reports_the_files_done_so_far(tmp_path: Path, polyglot: Path, minilm) -> None:
    gated = GatedEmbedder(minilm)
    store = VectorStore(tmp_path / "data", embedder=gated)
    jobs = RepoJobs(RepoIndexer(store, walk_config=WalkConfig(allowed_roots=(polyglot.parent,)), batch_files=3))
    try:
        job_id = jobs.submit(str(polyglot)).id
        assert gated.reached.wait(timeout=300)  # the second write batch is being embedded
        mid = jobs.get(job_id)
        assert mid.state == "running" and mid.progress is not None
        parsed = mid.progress.files_parsed  # whole write batches of 3 (one may hold no code, so no embedding)
        assert parsed % 3 == 0 and 0 < parsed <= mid.progress.files_seen < mid.progress.files_total
        assert jobs.recent()[0].progress == mid.progress
        gated.release.set()
        done = jobs.wait(job_id, timeout_s=300)
        assert done.state == "done" and done.progress is not None
        assert done.progress.files_seen == done.progress.files_total > mid.progress.files_seen
    finally:
        gated.release.set()
        jobs.close()
        store.close()


def test_the_jobs_list_shows_each_repository_with_its_progress(tmp_path: Path, polyglot: Path) -> None:
    from ragsvc.api.app import create_app

    roots = tmp_path / "roots"
    shutil.copytree(polyglot, roots / "a")
    shutil.copytree(polyglot, roots / "b")
    app = create_app(make_settings(tmp_path / "data"))
    app.state.repo_roots = (roots,)
    server = LiveServer(app, free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/v1/repos/jobs").json() == []
            ids = [client.post("/v1/repos", json={"path": str(roots / n)}).json()["id"] for n in ("a", "b")]
            for repo_id in ids:
                app.state.repo_jobs.wait(repo_id, timeout_s=300)
            listed = client.get("/v1/repos/jobs").json()
            assert [j["id"] for j in listed] == ids[::-1]  # newest first
            for job in listed:
                assert job["state"] == "done" and job["progress"]["files_seen"] == job["progress"]["files_total"] == 10
                assert job["progress"]["chunks"] == job["report"]["num_chunks"] > 0
            assert client.get("/v1/repos/jobs", params={"limit": 1}).json()[0]["id"] == ids[1]
            assert client.get("/v1/repos/jobs", params={"limit": 0}).status_code == 400
            assert client.get("/v1/repos/jobs", params={"limit": 501}).status_code == 400
    finally:
        server.stop()
