"""The held-out check of a trained reranker: does it rank better than the first stage it is meant to rescore?

A reranker fine-tuned on a few hundred judged queries can come out worse than no reranker at all (a head that
never learned scores every pair alike and scrambles a good shortlist), and its training loss does not say so.
So `ragsvc rerank train` keeps some of the judged queries out of training, and at the end ranks each of them
twice from the same shortlist: as the first stage returned it, and rescored by the new model. Both rankings are
scored with nDCG@k against the held-out judgements; the model is accepted only when it is not worse. "As the
reranker would serve it" includes the first-stage blend the model is saved with (`blend_scores`), and the
model's figure without the blend is reported beside it.

Everything here is plain data in, plain data out: the caller supplies the first stage (`ranked`), document text
(`text`) and the model (`score`), so the check runs the same on a real store and model and on hand-built ones.
nDCG is computed as in `ragsvc.evals.metrics` (linear gains, log2 discount, judged-relevant documents outside
the shortlist still counted in the ideal ranking), which sits in a higher layer than this module.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.rerank import blend_scores

Qrels = Mapping[str, Mapping[str, int]]
Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""score(query, passages) -> one relevance score per passage, higher is more relevant."""


@dataclass(frozen=True, slots=True)
class HoldoutReport:
    queries: int
    """Held-out queries that were ranked (those with a query text and a judged-relevant document)."""
    k: int
    candidates: int
    """Shortlist length the model rescored, as a reranker would at query time."""
    first_stage_weight: float
    first_stage_ndcg: float
    reranked_ndcg: float
    """As served: the model's scores blended with the first stage's at first_stage_weight."""
    model_ndcg: float
    """The model's scores alone (equal to reranked_ndcg when first_stage_weight is 0)."""

    @property
    def accepted(self) -> bool:
        """The model does not rank the held-out queries worse than the first stage."""
        return self.reranked_ndcg >= self.first_stage_ndcg

    def as_dict(self) -> dict[str, object]:
        return {"queries": self.queries, "k": self.k, "candidates": self.candidates,
                "first_stage_weight": self.first_stage_weight,
                f"first_stage_ndcg@{self.k}": round(self.first_stage_ndcg, 4),
                f"reranked_ndcg@{self.k}": round(self.reranked_ndcg, 4),
                f"model_alone_ndcg@{self.k}": round(self.model_ndcg, 4), "accepted": self.accepted}


def split_holdout(qrels: Qrels, *, fraction: float, seed: int = 0) -> tuple[dict[str, Mapping[str, int]],
                                                                              dict[str, Mapping[str, int]]]:
    """(training, held-out) judgements: a seeded `fraction` of the queries with a relevant document held out
    (at least one when fraction > 0), the rest for training. Queries without a relevant document stay in
    training, where they are skipped; they could not tell the check anything."""
    if not 0 <= fraction <= 0.5:
        raise InvalidInput(f"holdout fraction must be in [0, 0.5], got {fraction}; 0 skips the held-out check")
    judged = sorted(q for q, docs in qrels.items() if any(score > 0 for score in docs.values()))
    count = 0 if fraction == 0 else max(1, round(fraction * len(judged)))
    if count and count >= len(judged):
        raise InvalidInput(f"{len(judged)} judged queries are too few to hold {count} out and still train; add "
                           "judgements or pass --holdout 0 to skip the check")
    held = set(random.Random(seed).sample(judged, count))
    return ({q: docs for q, docs in qrels.items() if q not in held},
            {q: docs for q, docs in qrels.items() if q in held})


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    gains = sorted((g for g in relevance.values() if g > 0), reverse=True)
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    if ideal == 0.0:
        return 0.0
    return sum(max(relevance.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k])) / ideal


def holdout_check(queries: Mapping[str, str], held: Qrels, ranked: Callable[[str], Sequence[tuple[str, float]]],
                  text: Callable[[str], str | None], score: Scorer, *, first_stage_weight: float = 0.0,
                  candidates: int = 20, k: int = 10, on_query: Callable[[int, int], None] | None = None,
                  ) -> HoldoutReport:
    """Mean nDCG@k over the `held` queries of the first `candidates` of `ranked(query text)` ((document id,
    first-stage score) pairs, best first) as they are and as reordered by `score` (blended with the first stage
    at `first_stage_weight`, and alone). `text(id)` is None for a document the collection does not hold; such a
    document is dropped from the shortlist for every ranking alike."""
    if candidates < 1 or k < 1:
        raise InvalidInput(f"candidates and k must be at least 1, got {candidates} and {k}")
    usable = [q for q in sorted(held) if q in queries and any(g > 0 for g in held[q].values())]
    if not usable:
        raise InvalidInput("no held-out query has both a query text and a relevant document; check that --queries "
                           "and --qrels come from the same dataset")
    totals = [0.0, 0.0, 0.0]  # first stage, as served, model alone
    for done, query_id in enumerate(usable, start=1):
        query = queries[query_id]
        best: dict[str, float] = {}
        for doc, first in ranked(query):
            best.setdefault(doc, first)  # a document's best hit (several chunks may match)
        shortlist = [(doc, first, body) for doc, first in list(best.items())[:candidates]
                     if (body := text(doc)) is not None]
        scores = [float(s) for s in score(query, [body for _, _, body in shortlist])] if shortlist else []
        if len(scores) != len(shortlist):
            raise RuntimeError(f"the model returned {len(scores)} scores for {len(shortlist)} passages")
        served = blend_scores(scores, [first for _, first, _ in shortlist], first_stage_weight)
        for i, by in enumerate((None, served, scores)):
            order = range(len(shortlist)) if by is None else sorted(range(len(shortlist)), key=lambda j: -by[j])
            totals[i] += ndcg_at_k([shortlist[j][0] for j in order], held[query_id], k)  # ties keep first-stage order
        if on_query is not None:
            on_query(done, len(usable))
    first, reranked, alone = (total / len(usable) for total in totals)
    return HoldoutReport(queries=len(usable), k=k, candidates=candidates, first_stage_weight=first_stage_weight,
                         first_stage_ndcg=first, reranked_ndcg=reranked, model_ndcg=alone)
