"""Prompt-lookup proposals against a brute-force reference, and the acceptance rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.serving.prompt_lookup import propose
from ragsvc.serving.speculative import SpeculativeConfig, num_accepted


def _reference(ids: list[int], k: int, lo: int, hi: int) -> list[int]:
    """Longest tail n-gram in [lo, hi] seen earlier; the latest occurrence with k tokens after it, else the
    earliest; the k tokens after it."""
    for n in range(min(hi, len(ids) - 1), lo - 1, -1):
        tail = ids[-n:]
        ends = [e for e in range(n - 1, len(ids) - 1) if ids[e - n + 1 : e + 1] == tail]
        if ends:
            full = [e for e in ends if e + k < len(ids)]
            end = full[-1] if full else ends[0]
            return ids[end + 1 : end + 1 + k]
    return []


def test_examples() -> None:
    assert propose([1, 2, 3, 4, 2, 3], num_tokens=4, min_ngram=2, max_ngram=3) == [4, 2, 3]
    # Two earlier occurrences of the tail [1, 2, 3]: the latest one wins.
    assert propose([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], num_tokens=3) == [7, 5, 1]
    # The longer match wins over a later, shorter one: [8, 1, 2] occurred once, [1, 2] later as well.
    assert propose([8, 1, 2, 6, 6, 1, 2, 5, 8, 1, 2], num_tokens=2) == [6, 6]
    assert propose([5] * 7, num_tokens=3) == [5, 5, 5]  # a run proposes its own continuation in full
    assert propose([1, 2, 3, 4], num_tokens=3) == []  # nothing repeats
    assert propose([1, 2, 9, 2], num_tokens=3) == []  # a one-token match is below min_ngram
    assert propose([1, 2, 9, 2], num_tokens=3, min_ngram=1) == [9, 2]
    assert propose([1, 2, 1, 2], num_tokens=0) == []


def test_bad_ngram_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="min_ngram <= max_ngram"):
        propose([1, 2, 3], num_tokens=2, min_ngram=3, max_ngram=2)
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        SpeculativeConfig(num_tokens=0)
    with pytest.raises(ValueError, match="prompt-lookup"):
        SpeculativeConfig(method="draft-model")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=60),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(0, 3),
)
def test_matches_brute_force(ids, k, lo, extra) -> None:
    assert propose(ids, num_tokens=k, min_ngram=lo, max_ngram=lo + extra) == _reference(ids, k, lo, lo + extra)


def test_num_accepted_counts_the_agreeing_prefix() -> None:
    assert num_accepted([5, 6, 7], [5, 6, 7, 8]) == 3
    assert num_accepted([5, 6, 7], [5, 9, 7, 8]) == 1
    assert num_accepted([5, 6, 7], [4, 6, 7, 8]) == 0
    assert num_accepted([], [4]) == 0
    with pytest.raises(ValueError, match="need 3 target tokens"):
        num_accepted([1, 2], [1, 2])
