"""Length-bucketed batches: texts grouped by token count so a batch pays for little padding, then put back.

A transformer runs every row of a batch to the batch's longest row, so a 20-token title batched with a
256-token abstract costs as much as a second abstract. Sorting by token count (not characters, which a
tokenizer maps to tokens unevenly: numbers, chemistry, code) makes neighbours alike; cutting the sorted
order into batches of a fixed row count and a padded-token budget keeps both long and short batches near the
same cost. Pure logic: the embedder supplies the counts and runs the batches; `restore_order` undoes the sort.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_sorted_batches(token_counts: Sequence[int], *, batch_size: int,
                          max_batch_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices, longest first, cut into batches of at most `batch_size` rows and (when given) at most
    `max_batch_tokens` padded tokens (rows x the batch's longest row); a single row always fits a batch.

    Longest first, so a batch that runs out of memory does so at once rather than at the end of a long run.
    The sort is stable: equal lengths keep their input order, so the result is deterministic."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1 (or None for no budget), got {max_batch_tokens}")
    counts = np.asarray(token_counts, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(counts[order[start]]), 1)  # the first row of a batch is its longest
        rows = batch_size if max_batch_tokens is None else max(1, min(batch_size, max_batch_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def restore_order(batches: Sequence[np.ndarray], outputs: Sequence[np.ndarray], num_rows: int) -> np.ndarray:
    """Stack each batch's output rows (batch rows, dim) back at their input positions: (num_rows, dim)."""
    if len(batches) != len(outputs):
        raise ValueError(f"{len(batches)} batches but {len(outputs)} outputs")
    if not outputs:
        return np.zeros((num_rows, 0), dtype=np.float32)
    out = np.empty((num_rows, outputs[0].shape[1]), dtype=outputs[0].dtype)
    seen = np.zeros(num_rows, dtype=bool)
    for rows, vectors in zip(batches, outputs, strict=True):
        out[rows] = vectors
        seen[rows] = True
    if not seen.all():
        raise RuntimeError("length-sorted batches did not cover every row")
    return out
