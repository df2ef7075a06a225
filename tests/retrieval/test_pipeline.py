"""The pipeline composes the stages exactly as each stage alone would: dense = the store's search, lexical = the
BM25 index, hybrid = RRF of both at `candidates` depth, HyDE = a search by the expansion's vector, rerank =
the reranker over the fused head. Options it cannot serve are refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.retrieval.fuse import reciprocal_rank_fusion
from ragsvc.retrieval.hyde import HyDE, HydeOptions
from ragsvc.retrieval.pipeline import RetrievalOptions, RetrievalPipeline
from ragsvc.retrieval.rerank import EmbedderReranker
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.store.files import read_documents

SAMPLE = Path(__file__).resolve().parents[2] / "ragsvc" / "sample"
QUERY = "how does paged attention save KV cache memory?"


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm):
    s = VectorStore.open(tmp_path_factory.mktemp("pipe") / "data", embedder=minilm)
    s.create_collection("sample", chunk_tokens=64, chunk_overlap=8)
    s.add_documents("sample", [d for p in sorted(SAMPLE.glob("*.md")) for d in read_documents(p)])
    yield s
    s.close()


def _ids(hits):
    return [h.chunk_id for h in hits]


def test_dense_and_lexical_are_the_stores_own_searches(store):
    pipeline = RetrievalPipeline(store)
    dense = pipeline.retrieve("sample", QUERY, RetrievalOptions(mode="dense", k=5))
    assert _ids(dense.hits) == _ids(store.search("sample", query=QUERY, k=5).hits)
    assert dense.stages == ["dense"] and dense.served_by is not None
    lexical = pipeline.retrieve("sample", QUERY, RetrievalOptions(mode="lexical", k=5))
    assert _ids(lexical.hits) == _ids(store.lexical_search("sample", query=QUERY, k=5).hits)
    assert lexical.stages == ["lexical"] and lexical.served_by is None


def test_hybrid_is_rrf_of_both_at_candidate_depth(store):
    result = RetrievalPipeline(store).retrieve("sample", QUERY, RetrievalOptions(mode="hybrid", k=6, candidates=20))
    expected = reciprocal_rank_fusion([store.search("sample", query=QUERY, k=20).hits,
                                       store.lexical_search("sample", query=QUERY, k=20).hits], k=60)[:6]
    assert _ids(result.hits) == _ids(expected)
    assert [h.score for h in result.hits] == pytest.approx([h.score for h in expected])
    assert result.stages == ["dense", "lexical", "fuse"]
    assert {"dense_ms", "lexical_ms", "fuse_ms", "total_ms"} <= set(result.timings_ms)


def test_hyde_searches_with_the_expansion_vector(store, minilm):
    hyde = HyDE(ScriptedGenerator(lambda p: "Paged attention splits the KV cache into blocks allocated on demand."),
                minilm)
    options = RetrievalOptions(mode="dense", k=5, hyde=HydeOptions(n=2))
    result = RetrievalPipeline(store, hyde=hyde).retrieve("sample", QUERY, options)
    vector = hyde.expand(QUERY, HydeOptions(n=2)).vector
    assert _ids(result.hits) == _ids(store.search("sample", vector=vector, k=5).hits)
    assert result.hyde is not None and result.stages == ["hyde", "dense"]


def test_rerank_reorders_the_fused_head(store, minilm):
    reranker = EmbedderReranker(minilm)
    pipeline = RetrievalPipeline(store, rerankers={"embedder": reranker})
    options = RetrievalOptions(mode="lexical", k=4, candidates=12, rerank="embedder", rerank_candidates=8)
    result = pipeline.retrieve("sample", QUERY, options)
    head = store.lexical_search("sample", query=QUERY, k=12).hits[:8]
    assert _ids(result.hits) == _ids(reranker.rerank(QUERY, head).hits[:4])
    assert result.stages == ["lexical", "rerank:embedder"]


def test_a_stage_that_cannot_run_is_refused_before_any_work(store):
    pipeline = RetrievalPipeline(store)
    with pytest.raises(InvalidInput, match="hyde needs a language model"):
        pipeline.retrieve("sample", QUERY, RetrievalOptions(hyde=HydeOptions()))
    with pytest.raises(InvalidInput, match="reranker 'llm' is not available here"):
        pipeline.retrieve("sample", QUERY, RetrievalOptions(rerank="llm"))
    with pytest.raises(InvalidInput, match="query is empty"):
        pipeline.retrieve("sample", " ", RetrievalOptions())


@pytest.mark.parametrize("bad", [dict(mode="fuzzy"), dict(k=0), dict(k=5000), dict(candidates=0),
                                 dict(fusion="max"), dict(alpha=2.0), dict(mode="lexical", hyde=HydeOptions())])
def test_bad_options_are_refused(bad):
    with pytest.raises(InvalidInput):
        RetrievalOptions(**bad)
