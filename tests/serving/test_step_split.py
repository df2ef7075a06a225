"""Which chunks of a prompt step go to which half: each chunk once, in step order, halves within the share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragsvc.serving.sampling_params import SamplingParams
from ragsvc.serving.scheduler import ScheduledChunk
from ragsvc.serving.sequence import Sequence
from ragsvc.serving.step_split import SplitPolicy, context_weight, split_chunks


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


def test_chunks_behind_long_contexts_weigh_their_attention() -> None:
    chunks = _chunks([300, 200, 100, 100], starts=[0, 1000, 0, 0])
    by_tokens = split_chunks(chunks, SplitPolicy())
    assert by_tokens is not None
    assert [[chunks.index(c) for c in half] for half in by_tokens] == [[0, 3], [1, 2]]
    by_cost = split_chunks(chunks, SplitPolicy(context_weight=0.001))  # chunk 1 costs 420 tokens' worth
    assert by_cost is not None
    assert [[chunks.index(c) for c in half] for half in by_cost] == [[1, 3], [0, 2]]


def test_context_weight_compares_attention_with_linear_flops() -> None:
    assert context_weight(linear_params=1000, attention_width=10, attention_slowdown=1.0) == 4 * 10 / 2000
    with pytest.raises(ValueError, match="positive"):
        context_weight(linear_params=0, attention_width=10)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="min_tokens"):
        SplitPolicy(min_tokens=1)
    with pytest.raises(ValueError, match="max_share"):
        SplitPolicy(max_share=0.4)
    with pytest.raises(ValueError, match="max_share"):
        SplitPolicy(max_share=1.0)
    with pytest.raises(ValueError, match="context_weight"):
        SplitPolicy(context_weight=-1.0)


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
