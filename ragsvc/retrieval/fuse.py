"""Fusion of ranked hit lists (dense + lexical, or any number of retrievers) into one ranking.

Two methods, both over any number of lists, each list best first:

- Reciprocal-rank fusion (Cormack et al., 2009): score(d) = sum over lists of w_i / (k + rank_i(d)), rank
  from 1, a list that lacks d adds nothing. Only ranks matter, so retrievers whose scores live on different
  scales (cosine vs BM25) need no calibration; k = 60 is the paper's value and damps the top ranks' lead.
- Normalised convex combination: each list's scores min-max normalised to [0, 1], then
  score(d) = sum w_i * norm_i(d) with the weights summing to 1, a missing hit counting 0. With two lists this
  is `alpha * dense + (1 - alpha) * lexical`. Uses score gaps that RRF throws away, at the price of trusting
  each list's min and max (a list of one hit, or of equal scores, normalises to 1 for every hit: each is that
  list's best).

Hits are identified by chunk id. The fused hit is the first one seen (lists in argument order) with its score
replaced by the fused score; a chunk repeated inside one list counts once, at its best rank. Ties are broken
deterministically: higher fused score, then better (smaller) best rank in any list, then smaller chunk id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, TypeGuard, get_args

from ragsvc.errors import InvalidInput
from ragsvc.types import ChunkId, Hit

FusionMode = Literal["dense", "lexical", "hybrid"]
"""Which retrievers a search uses: the dense (vector) ranking alone, the lexical (BM25) one, or both fused."""
FusionMethod = Literal["rrf", "convex"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
RRF_K = 60


def _is_fusion_mode(value: str) -> TypeGuard[FusionMode]:
    return value in FUSION_MODES


def parse_fusion_mode(value: str) -> FusionMode:
    """`value` as a FusionMode, or InvalidInput naming the valid ones."""
    if not _is_fusion_mode(value):
        raise InvalidInput(f"unknown fusion mode {value!r}; use one of {', '.join(FUSION_MODES)}")
    return value


def _weights(num_lists: int, weights: Sequence[float] | None, *, normalise: bool) -> list[float]:
    if weights is None:
        return [1.0 / num_lists if normalise else 1.0] * num_lists
    if len(weights) != num_lists:
        raise InvalidInput(f"got {len(weights)} weights for {num_lists} ranked lists; give one weight per list")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InvalidInput(f"fusion weights must be >= 0 and not all 0, got {list(weights)}")
    total = sum(weights)
    return [w / total for w in weights] if normalise else [float(w) for w in weights]


def _fuse(rankings: Sequence[Sequence[Hit]], contributions: Sequence[dict[ChunkId, float]],
          limit: int | None) -> list[Hit]:
    """Sum per-list contributions and order with the module's tie-breaking."""
    first: dict[ChunkId, Hit] = {}
    best_rank: dict[ChunkId, int] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            first.setdefault(hit.chunk_id, hit)
            best_rank[hit.chunk_id] = min(best_rank.get(hit.chunk_id, rank), rank)
    fused = {cid: sum(c.get(cid, 0.0) for c in contributions) for cid in first}
    order = sorted(first, key=lambda cid: (-fused[cid], best_rank[cid], cid))
    if limit is not None:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        order = order[:limit]
    return [replace(first[cid], score=fused[cid]) for cid in order]


def _first_ranks(ranking: Sequence[Hit]) -> dict[ChunkId, int]:
    ranks: dict[ChunkId, int] = {}
    for rank, hit in enumerate(ranking, start=1):
        ranks.setdefault(hit.chunk_id, rank)
    return ranks


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hit]], *, k: float = RRF_K, weights: Sequence[float] | None = None,
    limit: int | None = None,
) -> list[Hit]:
    """RRF over `rankings` (each best first): score = sum_i w_i / (k + rank_i), w_i = 1 unless given."""
    if k < 0:
        raise InvalidInput(f"the RRF constant k must be >= 0, got {k}")
    if not rankings:
        return []
    ws = _weights(len(rankings), weights, normalise=False)
    contributions = [
        {cid: w / (k + rank) for cid, rank in _first_ranks(ranking).items()}
        for ranking, w in zip(rankings, ws, strict=True)
    ]
    return _fuse(rankings, contributions, limit)


def min_max(scores: Sequence[float]) -> list[float]:
    """Scores mapped to [0, 1] by (s - min) / (max - min); all 1.0 when max == min (each is the list's best)."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def weighted_score_fusion(
    rankings: Sequence[Sequence[Hit]], *, weights: Sequence[float] | None = None, limit: int | None = None,
) -> list[Hit]:
    """Convex combination of min-max normalised scores; weights are rescaled to sum to 1 (default: equal)."""
    if not rankings:
        return []
    ws = _weights(len(rankings), weights, normalise=True)
    contributions = []
    for ranking, w in zip(rankings, ws, strict=True):
        ranks = _first_ranks(ranking)
        kept = [ranking[r - 1] for r in sorted(ranks.values())]  # each chunk at its first (best) place
        contributions.append({h.chunk_id: w * n for h, n in zip(kept, min_max([h.score for h in kept]), strict=True)})
    return _fuse(rankings, contributions, limit)


def convex_combination(
    dense: Sequence[Hit], lexical: Sequence[Hit], *, alpha: float = 0.5, limit: int | None = None,
) -> list[Hit]:
    """`alpha * norm(dense) + (1 - alpha) * norm(lexical)`, min-max normalised, a missing hit counting 0."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInput(f"alpha must be in [0, 1] (1 = dense only, 0 = lexical only), got {alpha}")
    return weighted_score_fusion([dense, lexical], weights=[alpha, 1.0 - alpha], limit=limit)


def fuse(
    dense: Sequence[Hit], lexical: Sequence[Hit], *, mode: FusionMode = "hybrid", method: FusionMethod = "rrf",
    k: float = RRF_K, alpha: float = 0.5, limit: int | None = None,
) -> list[Hit]:
    """The ranking a search `mode` asks for: `dense` or `lexical` as they are (cut to `limit`), or `hybrid`:
    both fused by `method` (`rrf` with constant `k`, or `convex` with weight `alpha` on dense)."""
    if mode not in FUSION_MODES:
        parse_fusion_mode(mode)
    if method not in FUSION_METHODS:
        raise InvalidInput(f"unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}")
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    if mode != "hybrid":
        single = list(dense if mode == "dense" else lexical)
        return single if limit is None else single[:limit]
    if method == "rrf":
        return reciprocal_rank_fusion([dense, lexical], k=k, limit=limit)
    return convex_combination(dense, lexical, alpha=alpha, limit=limit)
