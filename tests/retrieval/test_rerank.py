"""Rerankers against brute-force reference scoring: MiniLM cosine (with the vector cache warm and cold, in
memory and in duckdb), P(yes) from scripted logprobs, and a tiny random cross-encoder vs CrossEncoder.predict."""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from importlib.resources import files

import numpy as np
import pytest

from ragsvc.errors import InvalidInput, NotFound
from ragsvc.llm.generator import Generation, Prompt, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.retrieval.rerank import (
    RERANKERS,
    CrossEncoderReranker,
    EmbedderReranker,
    LLMReranker,
    Reranker,
    judgement_prompt,
    make_reranker,
    ranked,
    yes_probability,
)
from ragsvc.store.catalog import Catalog
from ragsvc.store.vector_cache import InMemoryVectorCache
from ragsvc.types import ChunkId, DocumentId, Hit

QUERY = "How does the block manager reuse KV cache blocks between requests?"


def _passages() -> list[str]:
    text = "".join((files("ragsvc") / "sample" / name).read_text(encoding="utf-8")
                   for name in ("paged-attention.md", "hnsw.md", "bm25.md", "continuous-batching.md"))
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 15][:10]


def _hits(texts: Sequence[str], first_id: int = 1) -> list[Hit]:
    # first-stage scores decreasing, as a retriever would hand them over
    return [Hit(ChunkId(first_id + i), DocumentId(f"d{i % 3}"), t, 1.0 - i / 100) for i, t in enumerate(texts)]


class CountingEmbedder:
    """Wraps the real MiniLM and counts what it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.id, self.dim = inner, inner.id, inner.dim
        self.queries: list[str] = []
        self.documents: list[list[str]] = []

    def embed_query(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return self.inner.embed_query(text)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.documents.append(list(texts))
        return self.inner.embed_documents(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.inner.token_offsets(text)


def _reference_cosine(minilm, query: str, hits: Sequence[Hit]) -> list[tuple[int, float]]:
    """Brute force: embed everything afresh, cosine, sort (stable, so ties keep input order)."""
    vectors = minilm.embed_documents([h.text for h in hits]).astype(np.float64)
    q = minilm.embed_query(query).astype(np.float64)
    scores = vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [(hits[i].chunk_id, float(scores[i])) for i in order]


def _assert_matches(result, reference, *, atol: float = 1e-5) -> None:
    assert [h.chunk_id for h in result.hits] == [cid for cid, _ in reference]
    assert [h.score for h in result.hits] == pytest.approx([s for _, s in reference], abs=atol)


@pytest.fixture(params=["memory", "duckdb"])
def cache_factory(request, tmp_path):
    """A function returning the cache to use; for duckdb each call reopens the same file (a restart)."""
    if request.param == "memory":
        cache = InMemoryVectorCache()
        yield lambda: cache
        return
    opened: list[Catalog] = []

    def reopen():
        for cat in opened:
            cat.close()
        opened.append(Catalog(tmp_path / "catalog.duckdb"))
        return opened[-1].vector_cache()

    yield reopen
    for cat in opened:
        cat.close()


def test_embedder_reranker_cold_then_warm_matches_brute_force(minilm, cache_factory):
    hits = _hits(_passages())
    reference = _reference_cosine(minilm, QUERY, hits)
    counting = CountingEmbedder(minilm)
    reranker = EmbedderReranker(counting, cache_factory())
    assert isinstance(reranker, Reranker)

    cold = reranker.rerank(QUERY, hits)
    _assert_matches(cold, reference)
    assert counting.documents == [[h.text for h in hits]] and counting.queries == [QUERY]
    assert cold.counts == {"cache_hits": 0, "embedded": len(hits)}
    by_id = {h.chunk_id: (rank, h.score) for rank, h in enumerate(hits, start=1)}
    assert [(r, s) for r, s in zip(cold.first_stage_ranks, cold.first_stage_scores, strict=True)] == [
        by_id[h.chunk_id] for h in cold.hits]

    warm_reranker = EmbedderReranker(counting, cache_factory())  # a new process on the same cache
    warm = warm_reranker.rerank(QUERY, hits, top_n=3)
    _assert_matches(warm, reference[:3])
    assert len(counting.documents) == 1 and counting.queries == [QUERY, QUERY]  # only the query was embedded
    assert warm.counts == {"cache_hits": len(hits), "embedded": 0}
    assert set(warm.timings_ms) == {"embed_query_ms", "cache_ms"}


def test_embedder_reranker_embeds_only_new_or_changed_chunks(minilm):
    texts = _passages()
    counting = CountingEmbedder(minilm)
    reranker = EmbedderReranker(counting)
    reranker.rerank(QUERY, _hits(texts[:6]))
    # ids 5 and 6 cached; 7, 8 new; id 6 now carries different text (ids from another id space, say)
    mixed = _hits(texts[4:8], first_id=5)
    mixed[1] = Hit(ChunkId(6), DocumentId("x"), texts[9], 0.5)
    mixed.append(mixed[2])  # a chunk twice in one shortlist is embedded once
    result = reranker.rerank("nearest neighbour graph search", mixed)
    assert counting.documents[-1] == [texts[9], texts[6], texts[7]]
    assert result.counts == {"cache_hits": 1, "embedded": 3}
    _assert_matches(result, _reference_cosine(minilm, "nearest neighbour graph search", mixed))


def test_embedder_reranker_uses_the_cache_key(minilm):
    cache = InMemoryVectorCache()
    hits = _hits(_passages()[:2])
    EmbedderReranker(minilm, cache).rerank(QUERY, hits)
    other = CountingEmbedder(minilm)
    EmbedderReranker(other, cache, cache_key="minilm-with-a-prompt").rerank(QUERY, hits)
    assert len(other.documents) == 1  # a different key does not see the first embedder's vectors


def _judgement(*alternatives: tuple[str, float], chosen: tuple[str, float] | None = None) -> Generation:
    token, logprob = chosen or alternatives[0]
    return Generation(text=token, tokens=(TokenLogprob(token, logprob, top=alternatives),), finish_reason="length",
                      usage=Usage(10, 1))


def test_yes_probability_definition():
    lp = math.log
    assert yes_probability(_judgement(("Yes", lp(0.6)), ("No", lp(0.2)), ("The", lp(0.1)))) == pytest.approx(0.75)
    # every spelling of a label counts; other tokens do not
    both = _judgement((" no", lp(0.5)), ("Yes", lp(0.2)), (" yes", lp(0.1)), ("NO", lp(0.1)), ("yes.", lp(0.05)))
    assert yes_probability(both) == pytest.approx(0.3 / 0.9)
    # the chosen token joins the alternatives when it is not among them (a sampled token, or top_logprobs=0)
    assert yes_probability(_judgement(("no", lp(0.3)), chosen=("yes", lp(0.1)))) == pytest.approx(0.25)
    assert yes_probability(_judgement(chosen=("Yes", lp(0.4)))) == 1.0
    assert yes_probability(_judgement(("Maybe", lp(0.9)))) is None
    assert yes_probability(Generation("", (), "stop", Usage(1, 0))) is None


class BatchSpy(ScriptedGenerator):
    """Scripted replies; records each generate_many batch."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.batches: list[list[Prompt]] = []

    def generate_many(self, prompts, **kwargs):
        self.batches.append(list(prompts))
        return super().generate_many(prompts, **kwargs)


def test_llm_reranker_ranks_by_p_yes_in_one_batch():
    lp = math.log
    hits = _hits([f"passage {i}" for i in range(5)])
    replies = {
        "passage 0": _judgement(("No", lp(0.7)), ("Yes", lp(0.3))),
        "passage 1": _judgement(("Yes", lp(0.9)), ("No", lp(0.05))),
        "passage 2": _judgement(("Hmm", lp(0.9))),  # undecided
        "passage 3": _judgement((" yes", lp(0.5)), ("No", lp(0.4)), ("Yes", lp(0.05))),
        "passage 4": _judgement(("No", lp(0.99)), ("Yes", lp(0.001))),
    }
    generator = BatchSpy(lambda prompt: next(r for p, r in replies.items() if p in str(prompt)))
    result = LLMReranker(generator).rerank("the query", hits, top_n=4)

    reference = sorted(((h.chunk_id, yes_probability(replies[h.text])) for h in hits),
                       key=lambda kv: -(0.5 if kv[1] is None else kv[1]))
    assert [h.chunk_id for h in result.hits] == [cid for cid, _ in reference][:4] == [2, 4, 3, 1]
    assert [h.score for h in result.hits] == pytest.approx([0.9 / 0.95, 0.55 / 0.95, 0.5, 0.3])
    assert result.first_stage_ranks == (2, 4, 3, 1) and result.counts == {"judged": 5, "undecided": 1}
    assert len(generator.batches) == 1 and len(generator.batches[0]) == 5
    assert generator.calls[0][1] == {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 10}
    assert generator.batches[0][0] == judgement_prompt("the query", "passage 0")
    assert LLMReranker(generator).rerank("q", []).hits == [] and len(generator.batches) == 1


def test_judgement_prompt_caps_the_passage():
    messages = judgement_prompt("q", "x" * 5000, max_passage_chars=100)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "x" * 100 in messages[1]["content"] and "x" * 101 not in messages[1]["content"]
    assert "yes or no" in messages[1]["content"]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A randomly initialised 2-layer BERT with one output, with MiniLM's tokenizer files."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ragsvc.embed.embedder import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    source = resolve_model_path("minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1,
                        initializer_range=0.5)  # wide weights: scores spread over (0, 1) instead of ~0.5 +- 1e-6
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_cross_encoder_reranker_matches_predict(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    hits = _hits(_passages())
    reference_model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    scores = reference_model.predict([(QUERY, h.text) for h in hits])
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    result = CrossEncoderReranker(tiny_cross_encoder).rerank(QUERY, hits, top_n=5)
    assert [h.chunk_id for h in result.hits] == [hits[i].chunk_id for i in order[:5]]
    assert [h.score for h in result.hits] == pytest.approx([float(scores[i]) for i in order[:5]], abs=1e-6)
    assert set(result.timings_ms) == {"cross_encoder_ms"} and result.reranker == "cross-encoder"


def test_cross_encoder_folder_errors(tmp_path, tiny_cross_encoder):
    from transformers import BertConfig, BertForSequenceClassification

    with pytest.raises(NotFound, match="does not exist"):
        CrossEncoderReranker(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="not a loadable cross-encoder"):
        CrossEncoderReranker(tmp_path / "empty")
    two = tmp_path / "two-labels"
    shutil.copytree(tiny_cross_encoder, two)
    config = BertConfig.from_pretrained(str(two))
    config.num_labels = 2
    BertForSequenceClassification(config).save_pretrained(two)
    with pytest.raises(InvalidInput, match="one relevance output"):
        CrossEncoderReranker(two)


def test_ranked_ties_keep_input_order_and_nan_goes_last():
    hits = _hits(["a", "b", "c", "d"])
    result = ranked(hits, [0.5, float("nan"), 0.9, 0.5], top_n=None, reranker="t")
    assert [h.text for h in result.hits] == ["c", "a", "d", "b"]
    with pytest.raises(RuntimeError, match="3 scores for 4 hits"):
        ranked(hits, [1.0, 2.0, 3.0], top_n=None, reranker="t")


def test_factory_and_bad_input(minilm):
    assert RERANKERS == ("embedder", "llm", "cross-encoder")
    with pytest.raises(InvalidInput, match="embedder, llm, cross-encoder"):
        make_reranker("colbert")
    with pytest.raises(InvalidInput, match="needs a language model"):
        make_reranker("llm")
    with pytest.raises(InvalidInput, match="needs an embedder"):
        make_reranker("embedder")
    with pytest.raises(InvalidInput, match="model_dir"):
        make_reranker("cross-encoder")
    assert isinstance(make_reranker("embedder", embedder=minilm), EmbedderReranker)
    llm = make_reranker("llm", generator=ScriptedGenerator([]))
    assert isinstance(llm, LLMReranker)
    for reranker in (llm, make_reranker("embedder", embedder=minilm)):
        with pytest.raises(InvalidInput, match="top_n must be at least 1"):
            reranker.rerank("q", _hits(["a"]), top_n=0)
        assert reranker.rerank("q", [], top_n=3).hits == []
