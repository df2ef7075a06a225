"""BlockManager without a model: allocation, prefix reuse, copy-on-write, and invariants under Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.serving.block_manager import BlockManager
from ragsvc.serving.sampling_params import SamplingParams
from ragsvc.serving.sequence import Sequence

PARAMS = SamplingParams(max_tokens=4)


def _seq(rid: str, tokens: list[int]) -> Sequence:
    return Sequence(rid, list(tokens), PARAMS)


def _check_invariants(bm: BlockManager, live: list[Sequence]) -> None:
    refs = [b.ref_count for b in bm.blocks]
    assert all(r >= 0 for r in refs)
    used = sum(1 for r in refs if r > 0)
    assert used + bm.num_free_blocks == bm.num_blocks
    assert all(bm.blocks[b].ref_count == 0 for b in bm.free)
    # Every reference is accounted for by exactly the live sequences' block tables.
    expected = [0] * bm.num_blocks
    for s in live:
        for b in s.block_table:
            expected[b] += 1
    assert refs == expected


def test_allocate_and_free_return_every_block() -> None:
    bm = BlockManager(8, 4)
    seq = _seq("a", list(range(10)))  # 3 blocks
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    bm.deallocate(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == []


def test_allocate_without_room_is_refused() -> None:
    bm = BlockManager(2, 4)
    seq = _seq("a", list(range(9)))
    assert not bm.can_allocate(seq)
    with pytest.raises(RuntimeError, match="can_allocate"):
        bm.allocate(seq)


def test_full_prefix_blocks_are_reused_and_last_token_recomputed() -> None:
    bm = BlockManager(16, 4)
    a = _seq("a", list(range(12)))
    bm.allocate(a)
    a.num_computed_tokens = 12
    bm.commit(a)
    b = _seq("b", list(range(12)) + [99])  # same 3 full blocks + one more token
    bm.allocate(b)
    assert b.num_cached_tokens == 12 and b.block_table[:3] == a.block_table
    c = _seq("c", list(range(12)))  # identical prompt: the last block is recomputed so there are logits
    bm.allocate(c)
    assert c.num_cached_tokens == 8 and c.block_table[:2] == a.block_table[:2]
    assert c.block_table[2] != a.block_table[2]
    _check_invariants(bm, [a, b, c])


def test_freed_prefix_stays_warm_until_its_blocks_are_reused() -> None:
    bm = BlockManager(4, 4)
    a = _seq("a", list(range(8)))
    bm.allocate(a)
    a.num_computed_tokens = 8
    bm.commit(a)
    bm.deallocate(a)
    b = _seq("b", list(range(8)) + [5])
    assert bm.can_allocate(b)
    bm.allocate(b)
    assert b.num_cached_tokens == 8
    bm.deallocate(b)
    filler = _seq("f", [7] * 16)  # takes all four blocks: the cached keys are evicted
    bm.allocate(filler)
    bm.deallocate(filler)
    c = _seq("c", list(range(8)) + [5])
    bm.allocate(c)
    assert c.num_cached_tokens == 0


def test_different_prefix_same_block_tokens_is_not_a_hit() -> None:
    bm = BlockManager(16, 4)
    a = _seq("a", [1, 2, 3, 4, 5, 6, 7, 8, 0])
    bm.allocate(a)
    a.num_computed_tokens = 9
    bm.commit(a)
    b = _seq("b", [9, 9, 9, 9, 5, 6, 7, 8, 0])  # second block equal, first differs: chain breaks at once
    bm.allocate(b)
    assert b.num_cached_tokens == 0


def test_copy_on_write_when_a_shared_block_is_written() -> None:
    bm = BlockManager(8, 4)
    parent = _seq("p", list(range(6)))  # blocks: [0..3] full, [4, 5] partial
    bm.allocate(parent)
    parent.num_computed_tokens = 6
    child = _seq("c", list(range(6)))
    bm.fork(parent, child)
    assert bm.blocks[parent.block_table[1]].ref_count == 2
    child.token_ids.append(42)  # the child writes position 6, inside the shared partial block
    assert bm.can_append(child)
    bm.may_append(child)
    assert child.block_table[0] == parent.block_table[0]  # the full block stays shared
    assert child.block_table[1] != parent.block_table[1]
    assert bm.pending_copies == [(parent.block_table[1], child.block_table[1])]
    parent.token_ids.append(43)  # now the parent's block is private again: written in place, no copy
    bm.may_append(parent)
    assert len(bm.pending_copies) == 1
    _check_invariants(bm, [parent, child])


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "abort", "finish", "grow"]), st.integers(0, 10_000)),
        min_size=1000,
        max_size=1000,
    )
)
def test_invariants_hold_and_nothing_leaks(ops) -> None:
    bm = BlockManager(24, 4)
    live: list[Sequence] = []
    prefixes = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9], []]
    for n, (op, x) in enumerate(ops):
        if op == "add":
            seq = _seq(str(n), prefixes[x % 3] + [x % 7] * (1 + x % 11))
            if bm.can_allocate(seq):
                bm.allocate(seq)
                live.append(seq)
        elif op == "grow" and live:
            seq = live[x % len(live)]
            seq.num_computed_tokens = len(seq)  # everything so far has KV now
            bm.commit(seq)
            seq.token_ids.append(x % 5)
            if bm.can_append(seq):
                bm.may_append(seq)
            else:
                bm.deallocate(seq)  # what preemption does
                live.remove(seq)
        elif op in ("abort", "finish") and live:
            bm.deallocate(live.pop(x % len(live)))
        _check_invariants(bm, live)
    for seq in live:
        bm.deallocate(seq)
    assert bm.num_free_blocks == bm.num_blocks
    assert all(b.ref_count == 0 for b in bm.blocks)


def test_a_sequence_gets_the_block_after_its_last_one_when_free() -> None:
    bm = BlockManager(8, 4)
    a, b = _seq("a", list(range(8))), _seq("b", list(range(100, 104)))
    bm.allocate(a)  # blocks 0, 1
    bm.allocate(b)  # block 2
    bm.deallocate(b)  # block 2 is free again, behind never-used blocks 3..7
    a.num_computed_tokens = 8
    a.token_ids.append(9)  # a's 9th token needs a third block
    bm.may_append(a)
    assert a.block_table == [0, 1, 2]  # consecutive (the runner reads such a context as one slice)
    c = _seq("c", list(range(200, 212)))
    bm.allocate(c)
    assert c.block_table == [3, 4, 5]
    _check_invariants(bm, [a, c])
