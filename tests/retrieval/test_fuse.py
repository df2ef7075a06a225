"""Fusion on hand-built rankings, against scores computed by hand."""

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.fuse import (
    FUSION_MODES,
    convex_combination,
    fuse,
    min_max,
    parse_fusion_mode,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from ragsvc.types import ChunkId, DocumentId, Hit


def hit(cid: int, score: float, text: str = "") -> Hit:
    return Hit(ChunkId(cid), DocumentId(f"d{cid}"), text or f"chunk {cid}", score)


A, B, C, D = 1, 2, 3, 4
DENSE = [hit(A, 0.9), hit(B, 0.8), hit(C, 0.5)]
LEXICAL = [hit(C, 12.0, "lexical copy of C"), hit(D, 7.0), hit(A, 2.0)]


def ids(hits: list[Hit]) -> list[int]:
    return [h.chunk_id for h in hits]


def test_rrf_scores_and_tie_breaking():
    fused = reciprocal_rank_fusion([DENSE, LEXICAL])
    # A: ranks 1 and 3; C: ranks 3 and 1 -> equal sums, equal best rank 1 -> smaller chunk id first.
    # B and D: one rank-2 appearance each -> equal again, B (id 2) before D (id 4).
    assert ids(fused) == [A, C, B, D]
    expected = {A: 1 / 61 + 1 / 63, C: 1 / 63 + 1 / 61, B: 1 / 62, D: 1 / 62}
    assert {h.chunk_id: h.score for h in fused} == pytest.approx(expected, abs=1e-15)
    # the fused hit is the first one seen: C's text comes from the dense list
    assert fused[1].text == "chunk 3"


def test_rrf_k_weights_three_lists_and_limit():
    third = [hit(D, 1.0), hit(B, 0.5)]
    fused = reciprocal_rank_fusion([DENSE, LEXICAL, third], k=1, weights=[1.0, 2.0, 1.0], limit=3)
    expected = {A: 1 / 2 + 2 / 4, B: 1 / 3 + 1 / 3, C: 1 / 4 + 2 / 2, D: 2 / 3 + 1 / 2}
    assert ids(fused) == [C, D, A]
    assert [h.score for h in fused] == pytest.approx([expected[C], expected[D], expected[A]])


def test_rrf_counts_a_repeated_chunk_once_at_its_best_rank():
    fused = reciprocal_rank_fusion([[hit(A, 1.0), hit(B, 0.9), hit(A, 0.1)]], k=0)
    assert ids(fused) == [A, B]
    assert [h.score for h in fused] == pytest.approx([1.0, 0.5])


def test_min_max():
    assert min_max([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert min_max([0.4]) == [1.0] and min_max([2.0, 2.0]) == [1.0, 1.0] and min_max([]) == []


def test_convex_combination_by_hand():
    fused = convex_combination(DENSE, LEXICAL, alpha=0.7)
    # dense normalised: A 1, B 0.75, C 0; lexical normalised: C 1, D 0.5, A 0; missing = 0
    expected = {A: 0.7 * 1 + 0.3 * 0, B: 0.7 * 0.75, C: 0.7 * 0 + 0.3 * 1, D: 0.3 * 0.5}
    assert ids(fused) == [A, B, C, D]
    assert {h.chunk_id: h.score for h in fused} == pytest.approx(expected)


def test_convex_extremes_follow_the_formula():
    only_dense = convex_combination(DENSE, LEXICAL, alpha=1.0)
    assert ids(only_dense) == [A, B, C, D]  # C (dense 0) and D (missing) tie at 0: C has the better best rank
    assert [h.score for h in only_dense] == pytest.approx([1.0, 0.75, 0.0, 0.0])
    assert ids(convex_combination(DENSE, LEXICAL, alpha=0.0)) == [C, D, A, B]


def test_weighted_fusion_rescales_weights_and_handles_one_hit_lists():
    fused = weighted_score_fusion([[hit(A, 5.0)], [hit(B, 3.0), hit(A, 1.0)]], weights=[3, 1])
    # list 1: A -> 1 (a single hit is its list's best); list 2: B -> 1, A -> 0; weights 0.75 / 0.25
    assert ids(fused) == [A, B]
    assert [h.score for h in fused] == pytest.approx([0.75, 0.25])


def test_fuse_modes():
    assert ids(fuse(DENSE, LEXICAL, mode="dense")) == [A, B, C]
    assert ids(fuse(DENSE, LEXICAL, mode="lexical", limit=2)) == [C, D]
    assert ids(fuse(DENSE, LEXICAL)) == [A, C, B, D]
    assert ids(fuse(DENSE, LEXICAL, method="convex", alpha=0.7)) == [A, B, C, D]
    assert fuse([], [], mode="hybrid") == [] and reciprocal_rank_fusion([]) == []
    assert ids(fuse(DENSE, [], method="convex")) == [A, B, C]


def test_bad_input_says_what_is_valid() -> None:
    assert FUSION_MODES == ("dense", "lexical", "hybrid")
    assert parse_fusion_mode("hybrid") == "hybrid"
    with pytest.raises(InvalidInput, match="dense, lexical, hybrid"):
        parse_fusion_mode("sparse")
    with pytest.raises(InvalidInput, match="dense, lexical, hybrid"):
        fuse(DENSE, LEXICAL, mode="both")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="rrf, convex"):
        fuse(DENSE, LEXICAL, method="max")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="alpha"):
        convex_combination(DENSE, LEXICAL, alpha=1.5)
    with pytest.raises(InvalidInput, match="one weight per list"):
        reciprocal_rank_fusion([DENSE, LEXICAL], weights=[1.0])
    with pytest.raises(InvalidInput, match=">= 0"):
        weighted_score_fusion([DENSE], weights=[-1.0])
    with pytest.raises(InvalidInput, match="k must be"):
        reciprocal_rank_fusion([DENSE], k=-1)
    with pytest.raises(InvalidInput, match="limit"):
        fuse(DENSE, LEXICAL, limit=0)
