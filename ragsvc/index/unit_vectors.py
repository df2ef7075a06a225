"""Scaling vectors to unit length for cosine similarity, for any finite non-zero input.

`v / norm(v)` in float32 fails at both ends of the range: a component above about 2e19 squares to infinity,
so the norm is inf and the result all zeros (every hit then scored 0, the ranking arbitrary); components below
about 1e-23 square to zero, so a valid direction reads as "all zeros". Cosine similarity depends on direction only, so
each row is first divided by its largest magnitude: its components then lie in [-1, 1] with one at +-1, and
the norm of that lies in [1, sqrt(dim)], never overflowing or vanishing.
"""

from __future__ import annotations

import numpy as np


class NotNormalisable(ValueError):
    """A row with NaN or infinity, or with every component zero: it has no direction."""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(n, dim) -> (n, dim) float32, each row at unit length. Raises NotNormalisable naming the first bad row."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"unit_rows takes (n, dim) vectors, got shape {v.shape}")
    if not len(v):
        return v.copy()
    finite = np.asarray(np.isfinite(v).all(axis=1))  # (n,)
    scale: np.ndarray = np.abs(np.where(finite[:, None], v, 0)).max(axis=1)  # (n,)
    bad = np.flatnonzero(~finite | (scale == 0))
    if len(bad):
        row = int(bad[0])
        raise NotNormalisable(f"row {row} " + ("is all zeros" if finite[row] else "contains NaN or infinity"))
    scaled = v / scale[:, None]
    return (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32, copy=False)


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """(dim,) -> (dim,) float32 at unit length; raises NotNormalisable for NaN, infinity or all zeros."""
    v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    try:
        return unit_rows(v)[0]
    except NotNormalisable as exc:
        raise NotNormalisable(str(exc).replace("row 0 ", "the vector ", 1)) from None
