"""Retrieval metrics with the definitions BEIR uses (through pytrec_eval / trec_eval).

Definitions, per query (the mean over queries is reported):
- A result list is a mapping document id -> score. It is ranked by score descending and **ties are broken by
  document id descending** (string order), which is what trec_eval does, so equal scores give the same ranks
  on every run and the same numbers as pytrec_eval.
- Relevance is graded: a qrels score > 0 is relevant with that gain; 0 (or missing) is non-relevant.
- nDCG@k: sum over the top k of gain / log2(rank + 1), divided by the same sum for the ideal ordering of all
  judged-relevant documents (trec_eval's `ndcg_cut`, linear gain).
- recall@k: relevant documents in the top k / all relevant documents of the query.
- MRR@k: 1 / rank of the first relevant document within the top k, else 0.
- A query judged only with score 0 has no relevant documents; like pytrec_eval it scores 0 on every metric
  (it stays in the mean). A query with no results scores 0. Queries without any qrels are not evaluated.
- k larger than the result list just means fewer documents are considered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Ranking = Mapping[str, float]
"""document id -> score for one query (higher is better)."""

_METRIC = re.compile(r"^(ndcg|recall|mrr|precision)@(\d+)$")


def rank(scores: Ranking) -> list[str]:
    """Document ids best first: score descending, ties by document id descending (trec_eval's order)."""
    by_id_desc = sorted(scores, reverse=True)
    return sorted(by_id_desc, key=lambda doc: -scores[doc])  # stable sort keeps id-desc among equal scores


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    gains = sorted((g for g in rels.values() if g > 0), reverse=True)
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    if ideal == 0.0:
        return 0.0
    dcg = sum(max(rels.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    return dcg / ideal


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, g in rels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def precision_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """trec_eval's P@k: divides by k even when fewer than k documents were returned."""
    return sum(1 for doc in ranked[:k] if rels.get(doc, 0) > 0) / k


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if rels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_FUNCTIONS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k, "precision": precision_at_k}


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' -> ('ndcg', 10); a clear ValueError otherwise."""
    match = _METRIC.match(name)
    if match is None or int(match.group(2)) < 1:
        raise ValueError(f"unknown metric {name!r}; use ndcg@K, recall@K, mrr@K or precision@K with K >= 1")
    return match.group(1), int(match.group(2))


def evaluate_query(scores: Ranking, rels: Mapping[str, int], metrics: Iterable[str]) -> dict[str, float]:
    ranked = rank(scores)
    out: dict[str, float] = {}
    for name in metrics:
        kind, k = parse_metric(name)
        out[name] = _FUNCTIONS[kind](ranked, rels, k)
    return out


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Ranking], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-query metrics for every judged query; a judged query missing from `run` scores 0."""
    for name in metrics:
        parse_metric(name)
    return {qid: evaluate_query(run.get(qid, {}), rels, metrics) for qid, rels in qrels.items()}


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Arithmetic mean over queries of each metric (the number BEIR reports)."""
    if not per_query:
        return {}
    names = next(iter(per_query.values())).keys()
    return {name: float(np.mean([scores[name] for scores in per_query.values()])) for name in names}
