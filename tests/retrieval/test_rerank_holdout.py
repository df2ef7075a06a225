"""The held-out check of a trained reranker, and the listwise loss it is trained with, on hand-built data: the
check must refuse a model that scrambles a good shortlist and accept one that repairs a bad one."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals.metrics import ndcg_at_k as evals_ndcg
from ragsvc.retrieval.rerank import blend_scores
from ragsvc.retrieval.rerank_holdout import holdout_check, ndcg_at_k, split_holdout

QUERIES = {f"q{i}": f"query {i}" for i in range(4)}
TEXT = {f"d{i}": f"passage about topic {i}" for i in range(8)}
QRELS = {"q0": {"d0": 1}, "q1": {"d1": 1, "d2": 2}, "q2": {"d3": 1}, "q3": {"d7": 1}}  # d7: outside the shortlist


def first_stage(good: bool):  # type: ignore[no-untyped-def]
    """Each query's shortlist of 6 with falling scores: its relevant documents first (good) or last (bad)."""
    def ranked(query: str) -> list[str]:
        relevant = [d for d in QRELS[f"q{query.split()[1]}"] if d != "d7"]  # the first stage misses d7
        others = [d for d in TEXT if d not in relevant and d != "d7"][:6 - len(relevant)]
        ordered = relevant + others if good else others + relevant
        return [(doc, 1.0 - i / 10) for i, doc in enumerate(ordered)]
    return ranked


def by_relevance(sign: float):  # type: ignore[no-untyped-def]
    """A scorer that knows the judgements: sign +1 an oracle, -1 its opposite."""
    def score(query: str, passages: Sequence[str]) -> list[float]:
        rels = QRELS[f"q{query.split()[1]}"]
        return [sign * rels.get("d" + p.rsplit(" ", 1)[1], 0) for p in passages]
    return score


def test_refuses_a_model_that_scrambles_a_good_shortlist():
    report = holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, by_relevance(-1.0), candidates=6, k=3)
    assert report.queries == 4 and report.reranked_ndcg < report.first_stage_ndcg and not report.accepted
    assert report.as_dict()["accepted"] is False and report.as_dict()["first_stage_ndcg@3"] == pytest.approx(
        report.first_stage_ndcg, abs=1e-4)


def test_accepts_a_model_that_repairs_a_bad_shortlist_and_counts_what_the_shortlist_misses():
    report = holdout_check(QUERIES, QRELS, first_stage(good=False), TEXT.get, by_relevance(1.0), candidates=6, k=3)
    assert report.accepted and report.reranked_ndcg > report.first_stage_ndcg
    assert report.reranked_ndcg == pytest.approx(3 / 4)  # q3's only relevant document is not in its shortlist
    tie = holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, lambda q, ps: [0.0] * len(ps),
                        candidates=6, k=3)
    assert tie.reranked_ndcg == tie.first_stage_ndcg and not tie.accepted  # equal scores change nothing


def test_the_check_measures_the_model_as_served_blended_with_the_first_stage():
    """An opposite-of-the-judgements model alone is worse; blended with mostly the first stage, it changes
    nothing (a tie, still refused), and what is served is what is checked."""
    alone = holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, by_relevance(-1.0), candidates=6, k=3)
    mostly_first = holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, by_relevance(-1.0),
                                 first_stage_weights=[0.9], candidates=6, k=3)
    assert mostly_first.model_ndcg == alone.reranked_ndcg == alone.model_ndcg
    assert mostly_first.reranked_ndcg == mostly_first.first_stage_ndcg and not mostly_first.accepted
    assert mostly_first.as_dict()["first_stage_weight"] == 0.9


def test_every_other_query_chooses_the_weight_and_the_rest_judge_the_model_at_it():
    grid = [0.0, 0.5, 0.9]
    scrambling = holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, by_relevance(-1.0),
                               first_stage_weights=grid, candidates=6, k=3)
    assert [w for w, _ in scrambling.ndcg_by_weight] == [0.9, 0.5, 0.0] and scrambling.queries == 2
    assert scrambling.first_stage_weight == 0.9 and not scrambling.accepted  # its best only ties the first stage
    assert scrambling.ndcg_by_weight[0][1] == scrambling.choosing_first_stage_ndcg
    repairing = holdout_check(QUERIES, QRELS, first_stage(good=False), TEXT.get, by_relevance(1.0),
                              first_stage_weights=grid, candidates=6, k=3)
    assert repairing.accepted and repairing.first_stage_weight == 0.0  # the oracle alone is best
    judged_alone = holdout_check({q: QUERIES[q] for q in ("q1", "q3")}, QRELS, first_stage(good=False), TEXT.get,
                                 by_relevance(1.0), first_stage_weights=[0.0], candidates=6, k=3)
    assert repairing.reranked_ndcg == pytest.approx(judged_alone.reranked_ndcg)  # q1 and q3 judged; q0, q2 chose
    assert repairing.as_dict()["ndcg@3_by_first_stage_weight"]["0.0"] == pytest.approx(1.0)
    with pytest.raises(InvalidInput, match=r"\[0, 1\)"):
        holdout_check(QUERIES, QRELS, first_stage(good=True), TEXT.get, by_relevance(1.0), first_stage_weights=[1.0])
    with pytest.raises(InvalidInput, match="at least 2 held-out queries"):
        holdout_check({"q0": QUERIES["q0"]}, QRELS, first_stage(good=True), TEXT.get, by_relevance(1.0),
                      first_stage_weights=grid)


def test_blend_is_a_convex_combination_of_min_max_normalised_scores():
    assert blend_scores([3.0, 1.0, 2.0], [0.9, 0.5, 0.1], 0.0) == [3.0, 1.0, 2.0]  # the model alone, unchanged
    assert blend_scores([3.0, 1.0, 2.0], [0.9, 0.5, 0.1], 0.5) == pytest.approx([1.0, 0.25, 0.25])
    assert blend_scores([3.0, 1.0], [0.4, 0.2], 1.0) == pytest.approx([1.0, 0.0])
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        blend_scores([1.0], [1.0], 1.5)


def test_ndcg_matches_the_eval_harness():
    for ranked in (["d2", "d1", "d5"], ["d5", "d1"], [], ["d9", "d8", "d2", "d1"]):
        for k in (1, 3, 10):
            assert ndcg_at_k(ranked, QRELS["q1"], k) == pytest.approx(evals_ndcg(ranked, QRELS["q1"], k))


def test_split_holds_out_a_seeded_share_of_the_judged_queries():
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)} | {"unjudged": {"d0": 0}}
    training, held = split_holdout(qrels, fraction=0.1, seed=3)
    assert len(held) == 2 and "unjudged" in training and not set(training) & set(held)
    assert set(training) | set(held) == set(qrels)
    assert split_holdout(qrels, fraction=0.1, seed=3) == (training, held)
    assert split_holdout(qrels, fraction=0.0) == (qrels, {})
    assert len(split_holdout({"a": {"x": 1}, "b": {"y": 1}}, fraction=0.01)[1]) == 1  # at least one
    with pytest.raises(InvalidInput, match="too few"):
        split_holdout({"a": {"x": 1}}, fraction=0.5)
    with pytest.raises(InvalidInput, match=r"\[0, 0.5\]"):
        split_holdout(qrels, fraction=0.9)
    with pytest.raises(InvalidInput, match="same dataset"):
        holdout_check({}, QRELS, first_stage(good=True), TEXT.get, by_relevance(1.0))


def test_group_loss_is_a_softmax_cross_entropy_per_group_on_its_first_passage():
    import torch

    from ragsvc.retrieval.rerank_train import group_loss

    logits = torch.tensor([2.0, 0.0, 1.0, 0.5, 3.0])  # a group of 3, then a group of 2
    expected = (-torch.log_softmax(logits[:3], 0)[0] - torch.log_softmax(logits[3:], 0)[0]) / 2
    assert float(group_loss(logits, [3, 2])) == pytest.approx(float(expected))
    assert float(group_loss(torch.zeros(5), [3, 2])) == pytest.approx((math.log(3) + math.log(2)) / 2)
