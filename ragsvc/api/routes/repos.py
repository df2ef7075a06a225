"""Code repositories: index one in the background, poll its status, fetch its ranked map.

POST /v1/repos {path, collection?}          -> 202, the job (queued or already running)
GET  /v1/repos/jobs?limit=                   -> the latest job of each repository, newest first
GET  /v1/repos/{id}                         -> the job: state, progress counts, report (files, chunks, problems)
                                               or error
GET  /v1/repos/{id}/map?query=&tokens=      -> the repo map fitted to `tokens`, ranked for `query`

Paths must lie under the allowed roots (`settings.code.allowed_roots` when the settings have that section,
else `app.state.repo_roots`, else the server's working folder): every path outside them gets the same 400,
whether it exists or not; a missing path under them, a `~` path or an over-long one is a 400 too, all before
the 202.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from ragsvc.api.auth import requires
from ragsvc.api.deps import get_vector_store
from ragsvc.api.parsed_body import ParsedBodyRoute
from ragsvc.api.request_body import RequestBody
from ragsvc.api.schemas import CollectionName
from ragsvc.code.indexer import RepoIndexer
from ragsvc.code.jobs import RepoJob, RepoJobs
from ragsvc.code.walker import WalkConfig

router = APIRouter(prefix="/v1/repos", tags=["repos"], route_class=ParsedBodyRoute)
_create_lock = threading.Lock()


def allowed_roots(request: Request) -> tuple[Path, ...]:
    code_settings = getattr(getattr(request.app.state, "settings", None), "code", None)
    roots = getattr(code_settings, "allowed_roots", None) or getattr(request.app.state, "repo_roots", None)
    return tuple(Path(r) for r in roots) if roots else (Path.cwd(),)


def get_repo_jobs(request: Request) -> RepoJobs:
    """The app's job runner, built on first use (the store loads in the background after startup)."""
    store = get_vector_store(request)
    with _create_lock:
        jobs = getattr(request.app.state, "repo_jobs", None)
        if jobs is None or jobs.indexer.store is not store:
            indexer = RepoIndexer(store, walk_config=WalkConfig(allowed_roots=allowed_roots(request)))
            jobs = RepoJobs(indexer)
            request.app.state.repo_jobs = jobs
        return jobs


RepoJobsDep = Annotated[RepoJobs, Depends(get_repo_jobs)]


class RepoCreate(RequestBody):
    path: str = Field(min_length=1, max_length=4096, description="repository root folder on the server")
    collection: CollectionName | None = Field(None, description="target collection [default: repo-<folder>]")


class RepoProgressPublic(BaseModel):
    files_total: int = Field(description="source files the walk found")
    files_seen: int = Field(description="of them, hashed so far")
    files_parsed: int = Field(description="changed files parsed and written (lags seen by one write batch)")
    files_unchanged: int = Field(description="files left as the last run indexed them")
    chunks: int = Field(description="chunks written so far")


class RepoPublic(BaseModel):
    id: str
    path: str
    collection: str
    state: str
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    report: dict[str, object] = Field(default_factory=dict)
    progress: RepoProgressPublic | None = Field(None, description="null until the folder's walk has finished")


class RepoMapPublic(BaseModel):
    id: str
    query: str | None
    max_tokens: int
    num_tokens: int
    num_definitions: int
    text: str


def _public(job: RepoJob) -> RepoPublic:
    return RepoPublic(id=job.id, path=job.path, collection=job.collection, state=job.state,
                      submitted_at=job.submitted_at, started_at=job.started_at, finished_at=job.finished_at,
                      error=job.error, report=job.report,
                      progress=None if job.progress is None else RepoProgressPublic(**asdict(job.progress)))


# admin: it reads server folders (under the allowed roots) and creates a collection
@router.post("", status_code=202, response_model=RepoPublic, openapi_extra=requires("admin"))
def create_repo(body: RepoCreate, jobs: RepoJobsDep) -> RepoPublic:
    return _public(jobs.submit(body.path, collection=body.collection))


@router.get("/jobs", response_model=list[RepoPublic])
def list_repo_jobs(jobs: RepoJobsDep, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[RepoPublic]:
    return [_public(job) for job in jobs.recent(limit=limit)]


@router.get("/{repo_id}", response_model=RepoPublic)
def get_repo(repo_id: str, jobs: RepoJobsDep) -> RepoPublic:
    return _public(jobs.get(repo_id))


@router.get("/{repo_id}/map", response_model=RepoMapPublic)
def get_repo_map(
    repo_id: str,
    jobs: RepoJobsDep,
    query: Annotated[str | None, Query(max_length=2000)] = None,
    tokens: Annotated[int, Query(ge=1, le=65536)] = 1024,
) -> RepoMapPublic:
    repo_map = jobs.repo_map(repo_id, query=query or None, max_tokens=tokens)
    return RepoMapPublic(id=repo_id, query=query, max_tokens=tokens, num_tokens=repo_map.num_tokens,
                         num_definitions=repo_map.num_definitions, text=repo_map.text)
