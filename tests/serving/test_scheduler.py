"""Scheduler without a model: token budget, chunked prefill, FCFS, preemption that always finishes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.serving.block_manager import BlockManager
from ragsvc.serving.sampling_params import SamplingParams
from ragsvc.serving.scheduler import Scheduler
from ragsvc.serving.sequence import Sequence


def _make(num_blocks: int = 64, block_size: int = 4, budget: int = 32, max_seqs: int = 8) -> Scheduler:
    bm = BlockManager(num_blocks, block_size)
    return Scheduler(bm, max_num_seqs=max_seqs, max_num_batched_tokens=budget)


def _run(s: Scheduler, max_steps: int = 10_000) -> list[list[tuple[str, int, int]]]:
    """Drive the scheduler like the engine does, with token 7 as every 'sampled' token."""
    trace = []
    for _ in range(max_steps):
        if not s.has_unfinished():
            return trace
        out = s.schedule()
        assert out.chunks, "no progress with requests pending: deadlock"
        assert out.num_tokens <= s.max_num_batched_tokens
        assert len(s.running) <= s.max_num_seqs
        trace.append([(c.seq.request_id, c.start, c.num_new_tokens) for c in out.chunks])
        s.postprocess(out)
        for c in out.chunks:
            if c.samples:
                c.seq.token_ids.append(7)
                if c.seq.num_output_tokens >= c.seq.params.max_tokens:
                    s.finish(c.seq, "length")
    raise AssertionError("did not finish")


def test_long_prompt_is_prefilled_in_chunks_while_others_decode() -> None:
    s = _make(budget=8)
    s.add(Sequence("short", [1, 2, 3], SamplingParams(max_tokens=6)))
    s.add(Sequence("long", list(range(30)), SamplingParams(max_tokens=2)))
    trace = _run(s)
    assert trace[0] == [("short", 0, 3), ("long", 0, 5)]
    # While "long" is still prefilling, "short" decodes one token per step, scheduled first.
    assert trace[1] == [("short", 3, 1), ("long", 5, 7)]
    long_chunks = [n for step in trace for rid, _, n in step if rid == "long"]
    assert sum(long_chunks[:-1]) == 30 and max(long_chunks) <= 8


def test_waiting_requests_are_admitted_in_arrival_order() -> None:
    s = _make(num_blocks=6, block_size=4, budget=64)
    s.add(Sequence("big", list(range(20)), SamplingParams(max_tokens=3)))  # 5 blocks
    s.add(Sequence("huge", list(range(16)), SamplingParams(max_tokens=3)))  # does not fit beside "big"
    s.add(Sequence("tiny", [1], SamplingParams(max_tokens=3)))  # would fit, but must not overtake "huge"
    first = s.schedule()
    assert [c.seq.request_id for c in first.chunks] == ["big"]


def test_out_of_blocks_preempts_and_everything_still_finishes() -> None:
    s = _make(num_blocks=10, block_size=4, budget=64)
    for i in range(5):
        s.add(Sequence(f"r{i}", [i] * 6, SamplingParams(max_tokens=12)))
    _run(s)
    assert s.num_preemptions > 0
    assert s.block_manager.num_free_blocks == 10


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 20)), min_size=1, max_size=12),
    st.integers(8, 40),
    st.integers(1, 4),
)
def test_any_workload_finishes_without_leaks(requests, budget, max_seqs) -> None:
    s = _make(num_blocks=16, block_size=4, budget=budget, max_seqs=max_seqs)  # 64 slots: any one fits
    seqs = [Sequence(f"r{i}", [i % 3] * p, SamplingParams(max_tokens=m)) for i, (p, m) in enumerate(requests)]
    for seq in seqs:
        s.add(seq)
    _run(s)
    assert all(seq.num_output_tokens == seq.params.max_tokens for seq in seqs)
    assert s.block_manager.num_free_blocks == 16
    assert all(b.ref_count == 0 for b in s.block_manager.blocks)
