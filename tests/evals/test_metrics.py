"""Metrics against hand-computed values and, when it is installed, against pytrec_eval (what BEIR uses)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragsvc.evals.answer_metrics import answer_match, exact_match, normalize_answer, token_f1
from ragsvc.evals.metrics import (
    evaluate_run,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    rank,
    recall_at_k,
)


def test_rank_breaks_ties_by_document_id_descending():
    assert rank({"a": 1.0, "c": 1.0, "z": 1.0, "b": 2.0}) == ["b", "z", "c", "a"]


def test_ndcg_graded_with_ties_hand_computed():
    qrels = {"a": 1, "b": 0, "c": 2}
    ranked = rank({"a": 1.0, "c": 1.0, "z": 1.0, "b": 2.0})  # b z c a
    dcg = 2 / math.log2(4) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(ranked, qrels, 2) == 0.0
    assert mrr_at_k(ranked, qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, qrels, 2) == 0.0


def test_recall_counts_only_positive_judgements_and_k_beyond_results():
    qrels = {"a": 1, "b": 0, "c": 3, "d": 1}
    assert recall_at_k(["c", "b"], qrels, 1) == pytest.approx(1 / 3)
    assert recall_at_k(["c", "b"], qrels, 100) == pytest.approx(1 / 3)  # k larger than the list
    assert ndcg_at_k(["a", "c", "d"], qrels, 100) < 1.0  # the grade-3 document belongs first
    assert ndcg_at_k(["c", "a", "d"], qrels, 100) == pytest.approx(1.0)


def test_missing_qrels_and_empty_results():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}
    run = {"q1": {"a": 0.5}, "q2": {"b": 0.9}, "q4": {"a": 1.0}}  # q3 retrieved nothing; q4 is unjudged
    per_query = evaluate_run(qrels, run, ["ndcg@10", "recall@10", "mrr@10"])
    assert set(per_query) == {"q1", "q2", "q3"}
    assert per_query["q1"] == {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0}
    assert per_query["q2"] == {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0}  # only zero judgements
    assert per_query["q3"] == {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    assert mean_metrics(per_query)["ndcg@10"] == pytest.approx(1 / 3)


def test_parse_metric_rejects_unknown_names():
    assert parse_metric("recall@100") == ("recall", 100)
    for bad in ("map@10", "ndcg", "ndcg@0", "recall@x"):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_metric(bad)


def _random_case(seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(30)]
    qrels, run = {}, {}
    for q in range(20):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 6))}
        # coarse scores so ties are frequent
        run[qid] = {d: rng.choice([0.1, 0.2, 0.3, 0.5]) for d in rng.sample(docs, rng.randint(1, 25))}
    return qrels, run


@pytest.mark.parametrize("seed", range(5))
def test_matches_pytrec_eval(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = _random_case(seed)
    ours = evaluate_run(qrels, run, ["ndcg@10", "recall@10", "recall@100", "mrr@10"])
    # MRR@10 in trec_eval terms: recip_rank on the run cut to its top 10 (in trec_eval's tie order)
    cut = {q: {d: scores[d] for d in rank(scores)[:10]} for q, scores in run.items()}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    ref_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    for qid, theirs in ref.items():
        assert ours[qid]["ndcg@10"] == pytest.approx(theirs["ndcg_cut_10"], abs=1e-9)
        assert ours[qid]["recall@10"] == pytest.approx(theirs["recall_10"], abs=1e-9)
        assert ours[qid]["recall@100"] == pytest.approx(theirs["recall_100"], abs=1e-9)
        assert ours[qid]["mrr@10"] == pytest.approx(ref_rr[qid]["recip_rank"], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), min_size=1),
       st.dictionaries(st.sampled_from("abcdefghij"), st.floats(-1, 1), max_size=10),
       st.integers(1, 12))
def test_metric_invariants(qrels, scores, k):
    ranked = rank(scores)
    for fn in (ndcg_at_k, recall_at_k, mrr_at_k):
        assert 0.0 <= fn(ranked, qrels, k) <= 1.0 + 1e-12
    assert recall_at_k(ranked, qrels, k) <= recall_at_k(ranked, qrels, k + 1)


def test_squad_normalisation_em_and_f1():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Nine bars.", ["nine bars", "9 bars"]) == 1.0
    assert exact_match("nine", ["nine bars"]) == 0.0
    # "about nine bars" vs "nine bars": precision 2/3, recall 1 -> F1 0.8; the best gold answer counts
    assert token_f1("about nine bars", ["9 bars", "nine bars"]) == pytest.approx(0.8)
    assert token_f1("a", ["the"]) == 1.0  # both normalise to nothing
    assert token_f1("nothing in common", ["2021"]) == 0.0
    with pytest.raises(ValueError):
        token_f1("x", [])


def test_answer_match_finds_the_gold_words_inside_a_sentence():
    assert answer_match("No, they were not of the same nationality.", ["no"]) == 1.0
    assert answer_match("It was the Chief of Protocol.", ["Chief of Protocol"]) == 1.0
    assert answer_match("Nobody knows.", ["no"]) == 0.0  # whole words only
    assert answer_match("Protocol chief", ["Chief of Protocol"]) == 0.0  # in order and adjacent
    assert answer_match("in 2021", ["1999", "2021"]) == 1.0
