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


def _drive(s: Scheduler, arrivals: dict[int, list[Sequence]], max_steps: int = 5_000) -> dict[str, dict[str, int]]:
    """Run the scheduler on a scripted arrival pattern (step -> requests added before it); record per request
    the step it arrived, the step its first chunk ran, the step of its first token and the prefill tokens of
    every step. Token 7 is every sampled token."""
    marks: dict[str, dict[str, int]] = {}
    for step in range(max_steps):
        for seq in arrivals.get(step, []):
            s.add(seq)
            marks[seq.request_id] = {"arrived": step}
        if not s.has_unfinished() and step > max(arrivals):
            return marks
        out = s.schedule()
        assert out.chunks or not s.has_unfinished(), "no progress with requests pending: deadlock"
        prefill = sum(c.num_new_tokens for c in out.chunks if c.num_new_tokens > 1)  # a prompt's last token: 1
        assert prefill <= s.max_prefill_tokens and out.num_tokens <= s.max_num_batched_tokens
        s.postprocess(out)
        for c in out.chunks:
            marks[c.seq.request_id].setdefault("first_chunk", step)
            if c.samples:
                marks[c.seq.request_id].setdefault("first_token", step)
                c.seq.token_ids.append(7)
                if c.seq.num_output_tokens >= c.seq.params.max_tokens:
                    s.finish(c.seq, "length")
    raise AssertionError("did not finish")


def _policy(order: str, *, max_prefill: int | None = None, wait: int = 4, budget: int = 32) -> Scheduler:
    return Scheduler(BlockManager(256, 4), max_num_seqs=16, max_num_batched_tokens=budget,
                     max_prefill_tokens=max_prefill, prefill_order=order, max_wait_steps=wait)


def test_shortest_first_lets_short_prompts_pass_a_long_one() -> None:
    def burst() -> dict[int, list[Sequence]]:
        return {0: [Sequence("long", [1] * 200, SamplingParams(max_tokens=4))]
                + [Sequence(f"short{i}", [2] * 10, SamplingParams(max_tokens=4)) for i in range(6)]}

    fcfs = _drive(_policy("arrival", wait=100), burst())
    shortest = _drive(_policy("shortest", wait=100), burst())
    shorts = [f"short{i}" for i in range(6)]
    assert max(shortest[r]["first_token"] for r in shorts) < min(fcfs[r]["first_token"] for r in shorts)
    assert shortest["long"]["first_token"] > fcfs["long"]["first_token"]  # the price, paid by the long prompt


def test_a_steady_stream_of_short_prompts_cannot_starve_a_long_one() -> None:
    """Shortest-first alone would pass the long prompt over forever; after max_wait_steps it goes first."""
    arrivals: dict[int, list[Sequence]] = {0: [Sequence("long", [1] * 40, SamplingParams(max_tokens=2))]}
    for step in range(60):  # two 16-token prompts a step: exactly a step's budget, every step
        arrivals.setdefault(step, []).extend(  # distinct tokens: no prefix-cache hits
            Sequence(f"s{step}-{i}", [2 + 2 * step + i] * 16, SamplingParams(max_tokens=1)) for i in range(2))
    marks = _drive(_policy("shortest", wait=6, budget=32, max_prefill=32), arrivals)
    assert marks["long"]["first_chunk"] - marks["long"]["arrived"] <= 6
    starved = _drive(_policy("shortest", wait=10_000, budget=32, max_prefill=32), {
        k: [Sequence(s.request_id, list(s.token_ids), s.params) for s in v] for k, v in arrivals.items()})
    assert starved["long"]["first_chunk"] >= 60  # without the bound it waits for the stream to end


def test_prefill_cap_keeps_decoders_stepping() -> None:
    s = _policy("arrival", max_prefill=8, budget=64)
    marks = _drive(s, {0: [Sequence("a", [1] * 4, SamplingParams(max_tokens=30))],
                       1: [Sequence("b", [2] * 100, SamplingParams(max_tokens=2))]})
    # "b" is read 8 tokens a step (13 steps), and "a" decodes in every one of them.
    assert marks["b"]["first_token"] - marks["b"]["first_chunk"] == 12


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.integers(0, 30), st.lists(st.tuples(st.integers(1, 60), st.integers(1, 8)), min_size=1,
                                                 max_size=3), min_size=1, max_size=12),
    st.integers(1, 8),
    st.sampled_from([None, 4, 16]),
)
def test_no_request_is_passed_over_beyond_the_wait_bound(pattern, wait, max_prefill) -> None:
    """Scripted arrivals, no timing: once a request has waited max_wait_steps it is admitted before any
    younger one, so no admitted request is ever younger than an aged one still waiting; all finish, no leaks."""
    s = _policy("shortest", wait=wait, max_prefill=max_prefill, budget=24)
    original = s._schedule_waiting

    def checked(out, budget):
        before = list(s.waiting)
        original(out, budget)
        admitted = [q for q in before if q not in s.waiting]
        aged_left = [q for q in s.waiting if s.num_steps - q.arrival_step >= wait]
        for q in admitted:
            assert all(q.arrival < a.arrival or s.num_steps - q.arrival_step >= wait for a in aged_left)
            assert not aged_left or s.num_steps - q.arrival_step >= wait

    s._schedule_waiting = checked
    arrivals = {k: [Sequence(f"r{k}-{i}", [k % 5] * p, SamplingParams(max_tokens=m)) for i, (p, m) in enumerate(v)]
                for k, v in pattern.items()}
    marks = _drive(s, arrivals)
    assert all("first_token" in m for m in marks.values())
    assert s.block_manager.num_free_blocks == 256
