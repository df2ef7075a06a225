"""Code search: dense retrieval, optionally re-ranked with the symbol graph.

The graph stage runs PageRank personalised on the dense hits' definitions (weighted by a softmax of their
scores), so a candidate that other strong candidates call, or that sits at the centre of the relevant code,
moves up; the final score is the dense score plus `graph_weight` times the candidate's normalised PageRank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ragsvc.code.graph import SymbolGraph, def_node
from ragsvc.errors import InvalidInput
from ragsvc.types import Hit, SearchResult

_TEMPERATURE = 0.05  # cosine scores of near-ties differ by hundredths; this keeps the softmax from going flat


def graph_rerank(hits: Sequence[Hit], graph: SymbolGraph, *, graph_weight: float = 0.1, seeds: int = 10) -> list[Hit]:
    """Hits re-scored with personalised PageRank from the top `seeds` of them; best first."""
    if not hits or graph_weight == 0:
        return list(hits)
    by_key = {(d.rel_path, d.symbol): node for node, d in graph.definitions.items()}
    nodes = [by_key.get((h.metadata.get("path", ""), h.metadata.get("symbol", ""))) for h in hits]
    top = max(h.score for h in hits)
    teleport: dict[str, float] = {}
    for hit, node in list(zip(hits, nodes, strict=True))[:seeds]:
        if node is not None:
            teleport[node] = teleport.get(node, 0.0) + math.exp((hit.score - top) / _TEMPERATURE)
    if not teleport:
        return list(hits)
    ranks = {def_node(d): score for d, score in graph.rank(personalization=teleport)}
    candidate_ranks = [ranks.get(n, 0.0) if n is not None else 0.0 for n in nodes]
    scale = max(candidate_ranks) or 1.0
    rescored = [
        replace(hit, score=hit.score + graph_weight * rank / scale,
                metadata={**hit.metadata, "dense_score": hit.score, "graph_score": rank / scale})
        for hit, rank in zip(hits, candidate_ranks, strict=True)
    ]
    rescored.sort(key=lambda h: -h.score)
    return rescored


def code_search(store: Any, collection: str, query: str, *, k: int = 10, graph: SymbolGraph | None = None,
                candidates: int = 50, graph_weight: float = 0.1, filter: dict[str, Any] | None = None) -> SearchResult:
    """Dense top-`candidates` from the collection, re-ranked by the graph when one is given, cut to `k`."""
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    result: SearchResult = store.search(collection, query=query, k=max(k, candidates), filter=filter)
    if graph is None:
        return SearchResult(result.hits[:k], result.timings_ms, result.served_by)
    started = time.perf_counter()
    hits = graph_rerank(result.hits, graph, graph_weight=graph_weight)[:k]
    timings = {**result.timings_ms, "graph_ms": round((time.perf_counter() - started) * 1000.0, 3)}
    return SearchResult(hits, timings, result.served_by.with_stage("graph"))
