"""Fixtures for the index tests: one clustered corpus per session."""

from __future__ import annotations

import pytest

from tests.index.corpus import Corpus, make_corpus


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return make_corpus(3000, 64)


@pytest.fixture(scope="session", autouse=True)
def _single_faiss_thread():
    """faiss's OpenMP threads spin on a busy 2-core machine (training ran 10x slower with 2 threads here)."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)
