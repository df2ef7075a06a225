"""The held-out check of a trained reranker: does it rank better than the first stage it is meant to rescore?

A reranker fine-tuned on a few hundred judged queries can come out worse than no reranker at all (a head that
never learned scores every pair alike and scrambles a good shortlist), and its training loss does not say so.
So `ragsvc rerank train` keeps some of the judged queries out of training, and at the end ranks each of them
twice from the same shortlist: as the first stage returned it, and rescored by the new model. Both rankings are
scored with nDCG@k against the held-out judgements; the model is accepted only when it ranks them better.

A reranker trained briefly on a small set is rarely better than a good hybrid first stage on its own, but it
can still know something the first stage does not; so what is served is a blend of both scores
(`blend_scores`), and the weight of the first stage is chosen here. Choosing it on the queries that then
decide acceptance would flatter the model (a maximum over noisy means: an untrained model can win on a few
queries), so with more than one weight to try the held-out queries are split in two: every other query picks
the weight, the rest judge the model at that weight. The weights stay below 1 (the first stage alone), so a
model that adds nothing is refused.

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
    """Held-out queries that judged the model (those with a query text and a judged-relevant document; half
    of them when the other half chose the weight)."""
    k: int
    candidates: int
    """Shortlist length the model rescored, as a reranker would at query time."""
    first_stage_weight: float
    """The weight with the best nDCG among those tried on the choosing queries (ties: the larger weight)."""
    first_stage_ndcg: float
    reranked_ndcg: float
    """As served: the model's scores blended with the first stage's at first_stage_weight."""
    model_ndcg: float
    """The model's scores alone."""
    ndcg_by_weight: tuple[tuple[float, float], ...]
    """(first-stage weight, nDCG on the choosing queries) for every weight tried; empty with one weight."""
    choosing_first_stage_ndcg: float | None = None
    """The first stage alone on the choosing queries, the figure to read ndcg_by_weight against."""

    @property
    def accepted(self) -> bool:
        """The model, as served, ranks the held-out queries better than the first stage (a model that changes
        nothing costs time for no gain, and is refused too)."""
        return self.reranked_ndcg > self.first_stage_ndcg

    def as_dict(self) -> dict[str, object]:
        return {"queries": self.queries, "k": self.k, "candidates": self.candidates,
                "first_stage_weight": self.first_stage_weight,
                f"first_stage_ndcg@{self.k}": round(self.first_stage_ndcg, 4),
                f"reranked_ndcg@{self.k}": round(self.reranked_ndcg, 4),
                f"model_alone_ndcg@{self.k}": round(self.model_ndcg, 4),
                f"ndcg@{self.k}_by_first_stage_weight": {str(w): round(n, 4) for w, n in self.ndcg_by_weight},
                f"choosing_first_stage_ndcg@{self.k}": None if self.choosing_first_stage_ndcg is None
                else round(self.choosing_first_stage_ndcg, 4),
                "accepted": self.accepted}


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
                  text: Callable[[str], str | None], score: Scorer, *, first_stage_weights: Sequence[float] = (0.0,),
                  candidates: int = 20, k: int = 10, on_query: Callable[[int, int], None] | None = None,
                  ) -> HoldoutReport:
    """Mean nDCG@k of the first `candidates` of `ranked(query text)` ((document id, first-stage score) pairs,
    best first) as they are, reordered by `score` alone, and by `score` blended with the first stage at the
    best of `first_stage_weights` (each in [0, 1); chosen on every other `held` query when there are several,
    the figures then coming from the rest). `text(id)` is None for a document the collection does not hold;
    such a document is dropped from the shortlist for every ranking alike."""
    if candidates < 1 or k < 1:
        raise InvalidInput(f"candidates and k must be at least 1, got {candidates} and {k}")
    if not first_stage_weights or not all(0 <= w < 1 for w in first_stage_weights):
        raise InvalidInput(f"first-stage weights must be in [0, 1), got {list(first_stage_weights)}")
    usable = [q for q in sorted(held) if q in queries and any(g > 0 for g in held[q].values())]
    if not usable:
        raise InvalidInput("no held-out query has both a query text and a relevant document; check that --queries "
                           "and --qrels come from the same dataset")
    weights = sorted(set(first_stage_weights), reverse=True)
    if len(weights) > 1 and len(usable) < 2:
        raise InvalidInput("choosing a first-stage weight needs at least 2 held-out queries (one to choose, one to "
                           "judge); hold out more queries or give one weight")
    choosing, judging = (usable[0::2], usable[1::2]) if len(weights) > 1 else ([], usable)
    rows: dict[str, list[float]] = {}
    for done, query_id in enumerate(choosing, start=1):
        rows[query_id] = _ndcgs(queries[query_id], held[query_id], ranked, text, score, weights,
                                candidates=candidates, k=k)
        if on_query is not None:
            on_query(done, len(usable))
    by_weight = tuple((w, sum(rows[q][2 + i] for q in choosing) / len(choosing)) for i, w in enumerate(weights)
                      ) if choosing else ()
    chosen = max(by_weight, key=lambda pair: pair[1])[0] if by_weight else weights[0]  # first max: larger weight
    totals = [0.0, 0.0, 0.0]  # first stage, model alone, at the chosen weight
    for done, query_id in enumerate(judging, start=len(choosing) + 1):
        first, alone, served = _ndcgs(queries[query_id], held[query_id], ranked, text, score, [chosen],
                                      candidates=candidates, k=k)
        totals = [totals[0] + first, totals[1] + alone, totals[2] + served]
        if on_query is not None:
            on_query(done, len(usable))
    first, alone, served = (total / len(judging) for total in totals)
    return HoldoutReport(queries=len(judging), k=k, candidates=candidates, first_stage_weight=chosen,
                         first_stage_ndcg=first, reranked_ndcg=served, model_ndcg=alone, ndcg_by_weight=by_weight,
                         choosing_first_stage_ndcg=sum(r[0] for r in rows.values()) / len(rows) if rows else None)


def _ndcgs(query: str, relevance: Mapping[str, int], ranked: Callable[[str], Sequence[tuple[str, float]]],
           text: Callable[[str], str | None], score: Scorer, weights: Sequence[float], *, candidates: int,
           k: int) -> list[float]:
    """nDCG@k of one query's shortlist: as the first stage ranks it, by the model alone, then blended at each
    of `weights`."""
    best: dict[str, float] = {}
    for doc, first in ranked(query):
        best.setdefault(doc, first)  # a document's best hit (several chunks may match)
    shortlist = [(doc, first, body) for doc, first in list(best.items())[:candidates]
                 if (body := text(doc)) is not None]
    scores = [float(s) for s in score(query, [body for _, _, body in shortlist])] if shortlist else []
    if len(scores) != len(shortlist):
        raise RuntimeError(f"the model returned {len(scores)} scores for {len(shortlist)} passages")
    firsts = [first for _, first, _ in shortlist]
    out = []
    for by in [None, scores, *(blend_scores(scores, firsts, w) for w in weights)]:
        order = range(len(shortlist)) if by is None else sorted(range(len(shortlist)), key=lambda j: -by[j])
        out.append(ndcg_at_k([shortlist[j][0] for j in order], relevance, k))  # ties keep first-stage order
    return out
