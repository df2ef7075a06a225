"""MemoryColumns: the in-memory copy of importance and last access that picks retrieval's prior candidates."""

from __future__ import annotations

import numpy as np
import pytest

from ragsvc.agents.memory_columns import MemoryColumns
from ragsvc.agents.scoring import PAPER_WEIGHTS
from ragsvc.store.memories import ScoringColumns


def _columns(n: int = 0) -> MemoryColumns:
    return MemoryColumns(ScoringColumns(ids=np.arange(1, n + 1, dtype=np.int64), importance=np.full(n, 5.0),
                                        last_accessed_h=np.zeros(n)))


def test_prior_breaks_importance_ties_by_recency():
    cols = _columns()
    cols.append(np.array([1, 2, 3, 4]), np.array([10.0, 10.0, 10.0, 2.0]), np.array([1.0, 50.0, 30.0, 60.0]))
    # all three 10s tie on importance; the most recently accessed of them ranks first
    assert set(cols.top_prior(1, now_h=60.0, weights=PAPER_WEIGHTS).tolist()) == {2}
    assert set(cols.top_prior(2, now_h=60.0, weights=PAPER_WEIGHTS).tolist()) == {2, 3}
    cols.touch(np.array([1]), 70.0)
    assert set(cols.top_prior(1, now_h=70.0, weights=PAPER_WEIGHTS).tolist()) == {1}
    assert cols.top_prior(9, now_h=70.0, weights=PAPER_WEIGHTS).tolist() == [1, 2, 3, 4]


def test_appends_grow_past_capacity_and_lookups_stay_aligned():
    cols = _columns(1000)
    new = np.arange(1001, 3001, dtype=np.int64)
    cols.append(new, np.full(len(new), np.nan), np.full(len(new), 5.0))
    cols.set_importance(np.array([2000]), np.array([9.0]))
    importance, last = cols.lookup(np.array([5, 2000, 3000]))
    assert importance[0] == 5.0 and importance[1] == 9.0 and np.isnan(importance[2])
    assert last.tolist() == [0.0, 5.0, 5.0] and len(cols) == 3000 and cols.latest_access_h() == 5.0


def test_out_of_step_ids_are_a_bug():
    cols = _columns(3)
    with pytest.raises(RuntimeError, match="must grow"):
        cols.append(np.array([2]), np.array([1.0]), np.array([0.0]))
    with pytest.raises(RuntimeError, match="out of step"):
        cols.lookup(np.array([7]))
