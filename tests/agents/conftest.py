"""Agent test fixtures: a real duckdb catalog per test and a deterministic bag-of-words embedder, so memory
tests need no model (relevance is then word overlap, which a test can compute by hand)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pytest

from ragsvc.store.catalog import Catalog


class BagOfWordsEmbedder:
    """Each word hashes to a fixed random unit vector; a text is the normalised sum of its words' vectors."""

    id = "bag-of-words-64"
    dim = 64

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return v / np.linalg.norm(v)

    def _embed(self, text: str) -> np.ndarray:
        words = re.findall(r"[a-z0-9']+", text.lower()) or ["<empty>"]
        v = np.sum([self._word(w) for w in words], axis=0)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return np.stack([self._embed(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed(text)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", text)]


@pytest.fixture()
def embedder() -> BagOfWordsEmbedder:
    return BagOfWordsEmbedder()


@pytest.fixture()
def catalog(tmp_path):
    cat = Catalog(tmp_path / "catalog.duckdb")
    yield cat
    with contextlib.suppress(Exception):  # already closed by a reopen test
        cat.close()
