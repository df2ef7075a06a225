"""Wire retrieval fields (shared by search and answer bodies) -> the pipeline's RetrievalOptions."""

from __future__ import annotations

from typing import Any

from ragsvc.retrieval.hyde import HydeOptions
from ragsvc.retrieval.pipeline import RetrievalOptions


def retrieval_options(body: Any, k: int) -> RetrievalOptions:
    """`body` carries mode, hyde, rerank, rerank_candidates, candidates, fusion, alpha and filter (SearchRequest
    and AnswerRequest both do); `hyde: true` means HyDE with its defaults."""
    hyde = body.hyde
    hyde_options = None
    if hyde is True:
        hyde_options = HydeOptions()
    elif hyde not in (None, False):
        hyde_options = HydeOptions(**hyde.model_dump())
    return RetrievalOptions(mode=body.mode, k=k, candidates=max(k, body.candidates), fusion=body.fusion,
                            alpha=body.alpha, hyde=hyde_options, rerank=body.rerank,
                            rerank_candidates=body.rerank_candidates, filter=body.filter)
