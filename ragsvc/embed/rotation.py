"""PCA rotation that orders an embedding's dimensions by variance, for Matryoshka-style prefixes.

MiniLM is not trained with Matryoshka loss, so its first d' dimensions are no better than any other d'. An
orthogonal rotation onto the principal axes (largest variance first) makes the prefix carry the most
information while leaving inner products and L2 distances unchanged at full width: <qR, xR> = <q, x>.
The rotation is fitted on centred data but applied without centring; centring would shift every score of a
query by the same constant (<q, mean>), which changes no ranking, so it is simply not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragsvc.errors import IndexCorrupt, InvalidInput


@dataclass(frozen=True, slots=True)
class PcaRotation:
    matrix: np.ndarray
    """(dim, dim) float32, orthogonal; column j is the j-th principal axis."""
    explained_variance: np.ndarray
    """(dim,) float32, variance along each axis, descending."""

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.explained_variance.nbytes)

    @classmethod
    def fit(cls, vectors: np.ndarray) -> PcaRotation:
        """Fit on (n, dim) vectors; n should be well above dim for stable axes (a few thousand for 384-d)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise InvalidInput(f"PCA needs a (n >= 2, dim) array, got shape {x.shape}")
        centred = x - x.mean(axis=0, keepdims=True)  # (n, dim)
        cov = centred.T @ centred / (x.shape[0] - 1)  # (dim, dim)
        eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigvals)[::-1]
        matrix = np.ascontiguousarray(eigvecs[:, order], dtype=np.float32)  # (dim, dim)
        return cls(matrix, np.clip(eigvals[order], 0.0, None).astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) or (dim,) -> same shape, rotated."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.shape[-1] != self.dim:
            raise InvalidInput(f"vectors have {x.shape[-1]} dimensions; the rotation was fitted on {self.dim}")
        return np.ascontiguousarray(x @ self.matrix)

    def variance_ratio(self, dims: int) -> float:
        """Share of total variance the first `dims` rotated dimensions carry."""
        total = float(self.explained_variance.sum())
        return float(self.explained_variance[:dims].sum()) / total if total > 0 else 1.0

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, matrix=self.matrix, explained_variance=self.explained_variance)

    @classmethod
    def load(cls, path: Path, *, dim: int) -> PcaRotation:
        try:
            with np.load(path, allow_pickle=False) as data:
                matrix, variance = data["matrix"], data["explained_variance"]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise IndexCorrupt(f"rotation {path} cannot be read ({exc}); it will be refitted") from exc
        if matrix.shape != (dim, dim) or variance.shape != (dim,):
            raise IndexCorrupt(f"rotation {path} is {matrix.shape}, expected ({dim}, {dim}); it will be refitted")
        return cls(matrix.astype(np.float32), variance.astype(np.float32))
