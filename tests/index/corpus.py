"""Test corpus: clustered unit vectors (a few topics, anisotropic noise, like embeddings) and exact answers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ragsvc.index.exact_shard import ExactShard


@dataclass(frozen=True)
class Corpus:
    ids: np.ndarray  # (n,) int64, starting at 1 like chunk ids
    vectors: np.ndarray  # (n, dim) float32, unit norm
    queries: np.ndarray  # (q, dim) float32, unit norm

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def truth(self, k: int = 10, *, allowed: np.ndarray | None = None) -> np.ndarray:
        oracle = ExactShard(self.dim)
        oracle.add(self.ids, self.vectors)
        return oracle.search(self.queries, k, allowed_ids=allowed).ids


def make_corpus(n: int, dim: int, *, num_queries: int = 100, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 60, 4), dim))
    # Decaying per-dimension noise makes variance uneven across dimensions, as in real embeddings.
    spread = np.linspace(1.0, 0.1, dim) * 0.6
    total = n + num_queries
    points = centres[rng.integers(0, len(centres), total)] + rng.standard_normal((total, dim)) * spread
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    return Corpus(np.arange(1, n + 1, dtype=np.int64), points[:n], points[n:])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@k of rows of ids (q, k) against exact rows (q, k); -1 padding never counts."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max((t >= 0).sum(), 1)
            for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))
