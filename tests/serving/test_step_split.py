"""Which chunks of a prompt step go to which half: each chunk once, in step order, halves within the share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragsvc.serving.sampling_params import SamplingParams
from ragsvc.serving.scheduler import ScheduledChunk
from ragsvc.serving.sequence import Sequence
from ragsvc.serving.step_split import SplitPolicy, split_chunks


def _chunks(sizes: list[int], starts: list[int] | None = None) -> list[ScheduledChunk]:
    starts = starts or [0] * len(sizes)
    return [ScheduledChunk(Sequence(f"r{i}", [1] * (s + n), SamplingParams()), s, n)
            for i, (n, s) in enumerate(zip(sizes, starts, strict=True))]


def test_a_balanced_prompt_step_is_split_longest_first() -> None:
    chunks = _chunks([300, 200, 100, 1, 1])
    halves = split_chunks(chunks, SplitPolicy())
    assert halves is not None
    first, second = halves
    assert [c.num_new_tokens for c in first] == [300, 1]  # longest to the emptier side, ties to the first
    assert [c.num_new_tokens for c in second] == [200, 100, 1]


@pytest.mark.parametrize("sizes", [
    [1] * 16,  # a few decodes: below min_tokens
    [600],  # one chunk cannot be split
    [500, 100, 50],  # the larger half would hold 77% of the tokens
    [],
])
def test_small_or_lopsided_steps_run_whole(sizes: list[int]) -> None:
    assert split_chunks(_chunks(sizes), SplitPolicy()) is None


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="min_tokens"):
        SplitPolicy(min_tokens=1)
    with pytest.raises(ValueError, match="max_share"):
        SplitPolicy(max_share=0.4)
    with pytest.raises(ValueError, match="max_share"):
        SplitPolicy(max_share=1.0)


@given(st.lists(st.integers(1, 700), max_size=40), st.floats(0.5, 0.99))
def test_every_chunk_lands_in_exactly_one_half_in_step_order(sizes: list[int], share: float) -> None:
    chunks = _chunks(sizes)
    policy = SplitPolicy(min_tokens=64, max_share=share)
    halves = split_chunks(chunks, policy)
    total = sum(sizes)
    if halves is None:
        return
    first, second = halves
    assert first and second
    assert sorted(map(id, first + second)) == sorted(map(id, chunks))
    for half in halves:
        assert [chunks.index(c) for c in half] == sorted(chunks.index(c) for c in half)
        assert sum(c.num_new_tokens for c in half) <= share * total
    assert total >= policy.min_tokens
