"""Moving (n, dim) float32 blocks in and out of duckdb list columns through Arrow, without Python loops."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vectors_to_arrow(vectors: np.ndarray) -> pa.ListArray:
    """(n, dim) float32 -> an Arrow list<float> array of n rows."""
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(vectors, np.float32).ravel()))


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """An Arrow list<float> column of n rows, each `dim` wide -> (n, dim) float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.float32()))
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(-1, dim)
