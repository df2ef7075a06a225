"""Repository index jobs run in the background, one at a time, with a status anyone can poll: the job's state,
its progress counts while it runs (files found, hashed, parsed) and its report when done.

Index runs share the embedder and the CPU cores with serving, so one worker thread runs them in order (two at once
would only contend for the same cores and memory); a second request for a repository already queued or running
returns that job instead of starting another. The repository id is derived from its resolved path, so the same
folder always has the same id (and collection).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ragsvc.code.graph import SymbolGraph
from ragsvc.code.indexer import IndexProgress, RepoIndexer, default_collection_name
from ragsvc.code.manifest import manifest_path
from ragsvc.code.repo_map import RepoMap, build_map
from ragsvc.code.searcher import CollectionSearcher
from ragsvc.code.walker import WalkConfig, resolve_root
from ragsvc.errors import InvalidInput, NotFound, NotReady

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True, slots=True)
class RepoJob:
    id: str
    path: str
    collection: str
    state: JobState
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    report: dict[str, object] = field(default_factory=dict)
    progress: IndexProgress | None = None
    """Counts of the run in progress (or the last run); None until the folder's walk has finished."""


def repo_id(root: Path) -> str:
    return hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:16]


MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255


def check_repo_path(path: str, *, allowed_roots: tuple[Path, ...] | None) -> Path:
    """The path a caller asked to index, checked before anything touches it: InvalidInput (400) for a malformed
    path, and one answer, "not allowed", for every path outside the allowed roots, whether it exists or not (the
    answer must not tell a caller what exists outside them). Comparing the real path (symlinks followed)
    refuses a link under a root that points outside it."""
    if "\x00" in path:
        raise InvalidInput("repository path holds a NUL character; send the folder's path as text")
    if path.startswith("~"):
        raise InvalidInput(f"repository path {path[:200]!r} starts with '~': the server does not expand home "
                           "folders; send an absolute path or one relative to the server's working folder")
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError as exc:
        raise InvalidInput("repository path is not valid Unicode text") from exc
    if len(encoded) > MAX_PATH_BYTES or any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        raise InvalidInput(f"repository path is too long: at most {MAX_PATH_BYTES} bytes, {MAX_NAME_BYTES} per "
                           "folder name")
    if allowed_roots is not None:
        real = Path(os.path.realpath(os.path.abspath(path)))  # non-strict: a missing path resolves as far as it can
        if not any(real.is_relative_to(os.path.realpath(root)) for root in allowed_roots):
            allowed = ", ".join(str(r) for r in allowed_roots) or "(none configured)"
            raise InvalidInput(f"repository path {path[:200]!r} is not allowed: it is outside the allowed roots "
                               f"({allowed}); index a folder under them, or add a parent folder to the roots")
    return Path(path)


class RepoJobs:
    """Submits index runs to a single worker thread and keeps the latest job per repository."""

    def __init__(self, indexer: RepoIndexer) -> None:
        self.indexer = indexer
        self._jobs: dict[str, RepoJob] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._executor: ThreadPoolExecutor | None = None
        self._graphs: dict[str, tuple[int | None, SymbolGraph]] = {}

    @property
    def walk_config(self) -> WalkConfig:
        return self.indexer.walk_config

    def submit(self, path: str, *, collection: str | None = None) -> RepoJob:
        """Queue an index run; InvalidInput (400) at once for a missing path or one outside the allowed roots."""
        checked = check_repo_path(path, allowed_roots=self.walk_config.allowed_roots)
        root = resolve_root(checked, allowed_roots=self.walk_config.allowed_roots)
        job_id = repo_id(root)
        with self._lock:
            current = self._jobs.get(job_id)
            if current is not None and current.state in ("queued", "running"):
                return current
            job = RepoJob(id=job_id, path=str(root), collection=collection or (current.collection if current else
                          default_collection_name(root)), state="queued", submitted_at=time.time())
            self._jobs[job_id] = job
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragsvc-repo-index")
            self._executor.submit(self._run, job_id)
            return job

    def recent(self, *, limit: int = 100) -> list[RepoJob]:
        """The latest job of each repository, newest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.submitted_at, reverse=True)
        return jobs[:limit]

    def get(self, job_id: str) -> RepoJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no repository {job_id!r}; POST /v1/repos with its path first")
        return job

    def repo_map(self, job_id: str, *, query: str | None = None, max_tokens: int = 1024) -> RepoMap:
        job = self.get(job_id)
        try:
            graph = self._graph(job.collection)  # a re-index in progress still has the last map
        except NotFound as exc:
            if job.state == "failed":
                raise NotFound(f"repository {job_id!r} failed to index: {job.error}") from exc
            raise NotReady(
                f"repository {job_id!r} is {job.state}; retry when GET /v1/repos/{job_id} says done"
            ) from exc
        searcher = CollectionSearcher(self.indexer.store, job.collection) if query else None
        return build_map(graph, max_tokens=max_tokens, query=query, searcher=searcher)

    def _graph(self, collection: str) -> SymbolGraph:
        """The collection's graph, reloaded only when its manifest changed (loading parses JSON; ranking after
        the first call reuses the graph's cached transition matrix)."""
        path = manifest_path(self.indexer.store.data_dir, collection)
        try:
            version = path.stat().st_mtime_ns
        except FileNotFoundError:
            version = None
        with self._lock:
            cached = self._graphs.get(collection)
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]
        graph = self.indexer.load_graph(collection)
        with self._lock:
            self._graphs[collection] = (version, graph)
        return graph

    def wait(self, job_id: str, *, timeout_s: float) -> RepoJob:
        """Block until the job finishes or `timeout_s` passes (for the CLI and tests; the API polls)."""
        self.get(job_id)
        with self._changed:
            self._changed.wait_for(lambda: self._jobs[job_id].state in ("done", "failed"), timeout=timeout_s)
            return self._jobs[job_id]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _update(self, job_id: str, change: Callable[[RepoJob], RepoJob]) -> None:
        with self._changed:
            self._jobs[job_id] = change(self._jobs[job_id])
            self._changed.notify_all()

    def _run(self, job_id: str) -> None:
        job = self.get(job_id)
        self._update(job_id, lambda j: replace(j, state="running", started_at=time.time(), progress=None))

        def stages(progress: IndexProgress) -> None:
            self._update(job_id, lambda j: replace(j, progress=progress))

        try:
            report = self.indexer.index(job.path, collection=job.collection, stages=stages)
        except Exception as exc:  # any failure: the job reports it through its status instead of raising
            logger.exception("indexing %s failed", job.path)
            error = f"{type(exc).__name__}: {exc}"
            self._update(job_id, lambda j: replace(j, state="failed", finished_at=time.time(), error=error))
            return
        self._update(job_id, lambda j: replace(j, state="done", finished_at=time.time(), report=report.as_dict(),
                                               error=None))
