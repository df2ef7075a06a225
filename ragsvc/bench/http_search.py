"""HTTP search QPS through uvicorn on loopback vs in-process `VectorStore.search`, on the same collection.

The collection is a real ragsvc store (duckdb catalog + the default index spec) holding the benchmark's
passages, one chunk each. Ingest reuses the cached MiniLM vectors through `CachedVectorEmbedder`, a lookup of
vectors the real embedder already produced, so nothing is embedded twice. Both paths search by vector, one
query at a time, and include what an API call includes: validation, the index search, hydration from duckdb.

Order: ingest, measure in-process, close the store, start `uvicorn` in a subprocess (duckdb allows one
process per file), measure over HTTP with one httpx client, stop the server.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragsvc.bench.process import stop_process
from ragsvc.bench.search_records import HttpComparison, TimedPoint
from ragsvc.bench.timing import measure
from ragsvc.index.spec import IndexSpec
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import ChunkInput, DocumentInput

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

COLLECTION = "bench"
INGEST_BATCH = 1000
SERVER_START_TIMEOUT_S = 180.0


class CachedVectorEmbedder:
    """The Embedder protocol over vectors MiniLM already computed for these exact texts (a lookup, not a fake)."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, *, model_id: str) -> None:
        self._rows = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors  # (n, dim)
        self.id = model_id
        self.dim = int(vectors.shape[1])

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        missing = [t for t in texts if t not in self._rows]
        if missing:
            raise ValueError(f"{len(missing)} text(s) have no cached vector; this embedder only replays the cache")
        return self._vectors[[self._rows[t] for t in texts]]  # (len(texts), dim)

    def embed_query(self, text: str) -> np.ndarray:
        raise ValueError("the benchmark searches by vector; text queries need the real embedder")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        raise ValueError("the benchmark ingests one-chunk documents; chunking text needs the real embedder")


def build_store(data_dir: Path, texts: Sequence[str], vectors: np.ndarray, *, model_id: str,
                spec: IndexSpec, progress: Callable[[int, int], None] | None = None) -> None:
    """Ingest `texts` as one-chunk documents `p<row>` unless the store already holds them all; `progress` is
    called with (texts stored, texts total) after each batch."""
    embedder = CachedVectorEmbedder(texts, vectors, model_id=model_id)
    store = VectorStore.open(data_dir, embedder=embedder)
    try:
        if any(c.name == COLLECTION and c.num_chunks == len(texts) for c in store.list_collections()):
            return
        if any(c.name == COLLECTION for c in store.list_collections()):
            store.delete_collection(COLLECTION)
        store.create_collection(COLLECTION, index=spec)
        for start in range(0, len(texts), INGEST_BATCH):
            docs = [DocumentInput(text=t, id=f"p{start + i}", chunks=[ChunkInput(t, 0, len(t))])
                    for i, t in enumerate(texts[start : start + INGEST_BATCH])]
            store.add_documents(COLLECTION, docs)
            if progress is not None:
                progress(start + len(docs), len(texts))
    finally:
        store.close()


def _row(document_id: str) -> int:
    return int(document_id[1:])


def in_process(data_dir: Path, queries: np.ndarray, truth: np.ndarray, *, model_id: str,
               texts: Sequence[str], vectors: np.ndarray) -> TimedPoint:
    store = VectorStore.open(data_dir, embedder=CachedVectorEmbedder(texts, vectors, model_id=model_id))
    try:
        store.load_indexes()
        k = truth.shape[1]

        def search_one(q: np.ndarray) -> np.ndarray:
            result = store.search(COLLECTION, vector=q, k=k)
            return np.array([_row(h.document_id) for h in result.hits], dtype=np.int64)

        m = measure(search_one, queries, truth)
    finally:
        store.close()
    return TimedPoint("in-process VectorStore.search", m)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(client: httpx.Client, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the API server exited with code {server.returncode} before it was ready")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:  # connection refused while uvicorn binds
            pass
        time.sleep(0.2)  # polling for readiness, not part of any timing
    raise RuntimeError(f"the API server was not ready within {SERVER_START_TIMEOUT_S:.0f} s")


def over_http(data_dir: Path, queries: np.ndarray, truth: np.ndarray) -> TimedPoint:
    """POST /v1/collections/bench/search with a vector body, one request at a time, keep-alive connection."""
    import httpx

    port = _free_port()
    env = {**os.environ, "RAGSVC_STORE__DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread per query, like the in-process run
    cmd = [sys.executable, "-m", "uvicorn", "ragsvc.api.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(cmd, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            _wait_ready(client, server)
            k = truth.shape[1]

            def search_one(q: np.ndarray) -> np.ndarray:
                r = client.post(f"/v1/collections/{COLLECTION}/search", json={"vector": q.tolist(), "k": k})
                r.raise_for_status()
                return np.array([_row(h["document_id"]) for h in r.json()["hits"]], dtype=np.int64)

            m = measure(search_one, queries, truth)
    finally:
        stop_process(server)
    return TimedPoint("HTTP uvicorn+httpx (vector queries)", m,
                      {"server": "uvicorn 1 worker, --no-access-log", "client": "httpx.Client keep-alive"})


def http_vs_in_process(cache_path: Path, texts: Sequence[str], vectors: np.ndarray, queries: np.ndarray,
                       truth: np.ndarray, *, model_id: str, spec: IndexSpec,
                       progress: Callable[[int, int], None] | None = None) -> HttpComparison:
    """Both measurements plus their ratio; `truth` must be the exact top-k over `vectors`; `progress` follows
    the ingest (see `build_store`)."""
    data_dir = cache_path / f"http-store-{len(texts)}"
    started = time.perf_counter()
    build_store(data_dir, texts, vectors, model_id=model_id, spec=spec, progress=progress)
    build_s = time.perf_counter() - started
    local = in_process(data_dir, queries, truth, model_id=model_id, texts=texts, vectors=vectors)
    remote = over_http(data_dir, queries, truth)
    return HttpComparison(len(texts), spec.to_dict(), round(build_s, 1), in_process=local, http=remote)
