"""Embedding across worker processes: each holds its own copy of the model and a share of the cores.

One process embedding with N threads leaves cores idle wherever the model does not parallelise (tokenising,
pooling, the Python between layers, small batches), and a bulk load also chunks and writes in that process.
A pool of processes, each with its own model and `cores / workers` threads, keeps every core on matrix
multiplies. A batch's texts are cut into one contiguous slice per worker and the slices' vectors are stacked
back in order.

Each worker builds its embedder from the same `EmbedSettings` as the parent (`embedder_from_settings`), so it
computes the same function under the same id; the parent checks the workers report that id before the first
use. Workers start with "spawn" (a fork of a process that already runs torch's thread pools can hang), which
costs a model load per worker once per pool: worth it for a bulk load, not for a request.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ragsvc.config import EmbedSettings
    from ragsvc.embed.embedder import SentenceTransformerEmbedder

MAX_WORKERS = 64

_worker_embedder: SentenceTransformerEmbedder | None = None
"""The model of this worker process (set by `_start_worker`; None in the parent)."""


def _start_worker(settings: EmbedSettings, num_threads: int) -> None:
    import torch

    from ragsvc.embed.embedder import embedder_from_settings

    global _worker_embedder
    torch.set_num_threads(num_threads)
    _worker_embedder = embedder_from_settings(settings)


def _worker_id() -> str:
    assert _worker_embedder is not None, "the pool's initializer builds the embedder"
    return _worker_embedder.id


def _worker_embed(texts: list[str]) -> np.ndarray:
    assert _worker_embedder is not None, "the pool's initializer builds the embedder"
    return _worker_embedder.embed_documents(texts)  # (len(texts), dim)


class ProcessPoolEmbedder:
    """`embed(texts)` spread over `num_workers` processes. A context manager; `close` stops the workers."""

    def __init__(self, settings: EmbedSettings, *, num_workers: int, expected_id: str,
                 num_threads: int | None = None) -> None:
        """`expected_id`: the id of the embedder the collection was built with; a pool whose workers compute
        another function is refused. `num_threads` per worker defaults to the cores divided among them."""
        if not 1 <= num_workers <= MAX_WORKERS:
            raise ValueError(f"num_workers must be in [1, {MAX_WORKERS}], got {num_workers}")
        threads = num_threads or max(1, (os.cpu_count() or 1) // num_workers)
        self.num_workers = num_workers
        self._pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(settings, threads))
        ids = {f.result() for f in [self._pool.submit(_worker_id) for _ in range(num_workers)]}
        if ids != {expected_id}:
            self.close()
            raise ValueError(f"the worker processes embed with {sorted(ids)}, not {expected_id!r}: start them with "
                             "the settings the collection was built with")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, in order: one contiguous slice of `texts` per worker, run at once."""
        texts = list(texts)
        bounds = np.linspace(0, len(texts), self.num_workers + 1).astype(int)
        slices = [texts[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        parts = [f.result() for f in [self._pool.submit(_worker_embed, s) for s in slices]]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessPoolEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
