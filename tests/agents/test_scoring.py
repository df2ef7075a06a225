"""The retrieval score against a hand computation, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragsvc.agents.scoring import (
    PAPER_WEIGHTS,
    REFERENCE_CODE_WEIGHTS,
    RetrievalWeights,
    fill_pending,
    min_max,
    recency,
    score_candidates,
    top_k,
)
from ragsvc.errors import InvalidInput

# three candidates at now = 20 h: (relevance, importance, last accessed)
RELEVANCE = np.array([0.9, 0.5, 0.1])
IMPORTANCE = np.array([2.0, 8.0, 5.0])
LAST = np.array([10.0, 18.0, 20.0])


def test_paper_weights_match_a_hand_computation():
    parts = score_candidates(relevance=RELEVANCE, importance=IMPORTANCE, last_accessed_h=LAST, now_h=20.0,
                             weights=PAPER_WEIGHTS)
    # recency 0.995**10 = 0.951110, 0.995**2 = 0.990025, 0.995**0 = 1 -> min-max: 0, 0.038915/0.048890, 1
    r_b = (0.995**2 - 0.995**10) / (1 - 0.995**10)
    assert r_b == pytest.approx(0.79597, abs=1e-5)
    assert parts.recency == pytest.approx([0.0, r_b, 1.0])
    assert parts.importance == pytest.approx([0.0, 1.0, 0.5])  # (2, 8, 5) over [2, 8]
    assert parts.relevance == pytest.approx([1.0, 0.5, 0.0])  # (0.9, 0.5, 0.1) over [0.1, 0.9]
    assert parts.total == pytest.approx([1.0, r_b + 1.5, 1.5])
    assert top_k(parts.total, 3).tolist() == [1, 2, 0]


def test_reference_code_weights_match_a_hand_computation():
    parts = score_candidates(relevance=RELEVANCE, importance=IMPORTANCE, last_accessed_h=LAST, now_h=20.0,
                             weights=REFERENCE_CODE_WEIGHTS)
    r_b = (0.99**2 - 0.99**10) / (1 - 0.99**10)  # 0.791880
    assert parts.total == pytest.approx([3.0, 0.5 * r_b + 2.0 + 1.5, 0.5 + 1.0 + 0.0])
    assert top_k(parts.total, 2).tolist() == [1, 0]


def test_constant_terms_are_neutral_and_pending_importance_takes_the_median():
    assert min_max(np.array([3.0, 3.0])).tolist() == [0.5, 0.5]
    assert fill_pending(np.array([2.0, np.nan, 8.0, 4.0])).tolist() == [2.0, 4.0, 8.0, 4.0]
    assert fill_pending(np.array([np.nan, np.nan])).tolist() == [5.0, 5.0]
    parts = score_candidates(relevance=np.array([0.2, 0.2]), importance=np.array([np.nan, 6.0]),
                             last_accessed_h=np.array([1.0, 1.0]), now_h=1.0)
    assert parts.total.tolist() == [1.5, 1.5]


def test_recency_decays_per_hour_since_last_access():
    assert recency(np.array([0.0, 24.0]), now_h=24.0, decay=0.995) == pytest.approx([0.995**24, 1.0])


def test_ties_keep_input_order():
    assert top_k(np.array([1.0, 2.0, 2.0, 1.0]), 4).tolist() == [1, 2, 0, 3]


@pytest.mark.parametrize("kwargs", [
    {"recency": -1.0}, {"importance": math.nan}, {"relevance": math.inf},
    {"recency": 0.0, "importance": 0.0, "relevance": 0.0}, {"decay": 0.0}, {"decay": 1.5},
])
def test_weights_out_of_range_are_refused(kwargs):
    with pytest.raises(InvalidInput):
        RetrievalWeights(**kwargs)


def test_a_clock_running_backwards_is_refused():
    with pytest.raises(InvalidInput, match="must not run backwards"):
        score_candidates(relevance=RELEVANCE, importance=IMPORTANCE, last_accessed_h=LAST, now_h=19.0)
    with pytest.raises(InvalidInput, match="simulation hours"):
        recency(LAST, now_h=math.nan, decay=0.995)
    with pytest.raises(InvalidInput, match="differ in length"):
        score_candidates(relevance=RELEVANCE[:2], importance=IMPORTANCE, last_accessed_h=LAST, now_h=20.0)
