"""The retrieval pipeline: plain stages composed in one function, each run only when a request asks for it.

    query ─┬─ (HyDE: the model writes passages; their mean embedding replaces the query vector)
           ├─ dense:   VectorStore.search (Matryoshka shortlist, exact merge, full-width rescoring)
           └─ lexical: the collection's BM25 index
        -> fuse (mode: dense | lexical | hybrid; RRF or a convex combination)
        -> (rerank the top `rerank_candidates` with a Reranker: embedder, LLM or cross-encoder)
        -> top k, with every stage's wall time

A stage that is not asked for costs nothing: dense-only search is one call into the store, as before. When
fusion or reranking needs more than k candidates, each retriever is asked for `candidates` hits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.fuse import FUSION_METHODS, FUSION_MODES, RRF_K, FusionMethod, FusionMode, fuse
from ragsvc.retrieval.hyde import HyDE, HydeExpansion, HydeOptions
from ragsvc.retrieval.rerank import Reranker
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import Hit, ServedBy

MAX_K = 1000
MAX_CANDIDATES = 1000


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    mode: FusionMode = "dense"
    k: int = 10
    candidates: int = 100
    """Hits each retriever returns when fusing or reranking (at least k)."""
    fusion: FusionMethod = "rrf"
    rrf_k: float = RRF_K
    alpha: float = 0.5
    """Weight of the dense ranking in the convex combination (fusion = convex)."""
    hyde: HydeOptions | None = None
    rerank: str | None = None
    """Name of a configured reranker: embedder, llm, cross-encoder."""
    rerank_candidates: int = 30
    """How many of the fused hits the reranker rescores; the rest keep their order below them."""
    filter: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise InvalidInput(f"unknown search mode {self.mode!r}; use one of {', '.join(FUSION_MODES)}")
        if self.fusion not in FUSION_METHODS:
            raise InvalidInput(f"unknown fusion {self.fusion!r}; use one of {', '.join(FUSION_METHODS)}")
        if not 1 <= self.k <= MAX_K:
            raise InvalidInput(f"k must be in [1, {MAX_K}], got {self.k}")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise InvalidInput(f"candidates must be in [1, {MAX_CANDIDATES}], got {self.candidates}")
        if not 1 <= self.rerank_candidates <= MAX_CANDIDATES:
            raise InvalidInput(f"rerank_candidates must be in [1, {MAX_CANDIDATES}], got {self.rerank_candidates}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInput(f"alpha must be in [0, 1] (1 = dense only), got {self.alpha}")
        if self.mode == "lexical" and self.hyde is not None:
            raise InvalidInput("hyde changes the dense query vector; use it with mode dense or hybrid")
        if self.filter is not None and not isinstance(self.filter, Mapping):
            raise InvalidInput('filter must be a JSON object such as {"lang": "python"}, got '
                               f"{type(self.filter).__name__}")


@dataclass(frozen=True, slots=True)
class RetrievalResult:
    hits: list[Hit]
    timings_ms: dict[str, float]
    served_by: ServedBy | None
    """Which dense index answered (None when the dense stage did not run)."""
    hyde: HydeExpansion | None = None
    stages: list[str] = field(default_factory=list)
    """The stages that ran, in order."""


class RetrievalPipeline:
    """Composes the stages over one VectorStore; HyDE and rerankers are optional parts given at build time."""

    def __init__(self, store: VectorStore, *, hyde: HyDE | None = None,
                 rerankers: Mapping[str, Reranker] | None = None) -> None:
        self.store = store
        self.hyde = hyde
        self.rerankers = rerankers if rerankers is not None else {}  # may build rerankers lazily on lookup

    def check(self, options: RetrievalOptions) -> None:
        """Refuse options this pipeline cannot serve, before any work (a 4xx that says what to change)."""
        if options.hyde is not None and self.hyde is None:
            raise InvalidInput("hyde needs a language model and none is configured; start the server with "
                               "--with-model or point RAGSVC_GENERATOR__URL at an OpenAI-compatible server")
        if options.rerank is not None and options.rerank not in self.rerankers:
            known = ", ".join(sorted(self.rerankers)) or "none are configured"
            raise InvalidInput(f"reranker {options.rerank!r} is not available here; available: {known}")

    def retrieve(self, collection: str, query: str, options: RetrievalOptions = RetrievalOptions()
                 ) -> RetrievalResult:
        self.check(options)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query is empty; send some text")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        stages: list[str] = []
        fusing = options.mode == "hybrid" or options.rerank is not None
        depth = max(options.k, options.candidates) if fusing else options.k
        if options.rerank is not None:
            depth = max(depth, options.rerank_candidates)
        filter_ = dict(options.filter) if options.filter else None

        dense: list[Hit] = []
        lexical: list[Hit] = []
        served_by: ServedBy | None = None
        expansion: HydeExpansion | None = None
        if options.mode in ("dense", "hybrid"):
            if options.hyde is not None:
                assert self.hyde is not None  # check() above
                t = time.perf_counter()
                expansion = self.hyde.expand(query, options.hyde)
                timings["hyde_ms"] = _ms(t)
                stages.append("hyde")
                found = self.store.search(collection, vector=expansion.vector, k=depth, filter=filter_)
            else:
                found = self.store.search(collection, query=query, k=depth, filter=filter_)
            dense, served_by = found.hits, found.served_by
            timings["dense_ms"] = found.timings_ms.get("total_ms", 0.0)
            stages.append("dense")
        if options.mode in ("lexical", "hybrid"):
            found = self.store.lexical_search(collection, query=query, k=depth, filter=filter_)
            lexical = found.hits
            timings["lexical_ms"] = found.timings_ms.get("total_ms", 0.0)
            stages.append("lexical")
        t = time.perf_counter()
        hits = fuse(dense, lexical, mode=options.mode, method=options.fusion, k=options.rrf_k, alpha=options.alpha)
        if options.mode == "hybrid":
            timings["fuse_ms"] = _ms(t)
            stages.append("fuse")
        if options.rerank is not None and hits:
            t = time.perf_counter()
            head = hits[: options.rerank_candidates]
            reranked = self.rerankers[options.rerank].rerank(query, head)
            hits = list(reranked.hits) + hits[len(head):]
            timings["rerank_ms"] = _ms(t)
            stages.append(f"rerank:{options.rerank}")
        timings["total_ms"] = _ms(started)
        return RetrievalResult(hits[: options.k], timings, served_by, expansion, stages)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
