"""The `pipeline` config kind (parsed by `pipeline_config`) and the Retriever it builds: a RetrievalPipeline over
the suite's corpus collection, with HyDE on the run's language model and the configured reranker, and a record
of what each stage cost.

Models are loaded once per run (`RunContext.shared`): two configs reranking with EmbeddingGemma share one
copy. The embedder reranker caches chunk vectors in the store's duckdb (`chunk_vector_cache`) under a key
naming the model and its document prompt, so a re-run of the suite embeds nothing it embedded before.
`build_s` is what the config's parts took to load (models, the BM25 index) before the first query.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ragsvc.embed.embedder import SentenceTransformerEmbedder
from ragsvc.errors import InvalidInput
from ragsvc.evals.configs import RunContext, Where
from ragsvc.evals.index_config import document_scores, fetch_size
from ragsvc.evals.pipeline_config import PipelineConfig, RerankSpec, parse_pipeline_config, resolve_model
from ragsvc.evals.stats import percentiles
from ragsvc.retrieval.hyde import HyDE, HydeExpansion
from ragsvc.retrieval.pipeline import RetrievalPipeline, RetrievalResult
from ragsvc.retrieval.rerank import CrossEncoderReranker, EmbedderReranker, LLMReranker, Reranker, RerankResult
from ragsvc.types import Hit

logger = logging.getLogger(__name__)

RERANK_BATCH = 8
"""Batch size of a reranking embedder: a shortlist's misses are embedded in one call, which sorts them by length
and pads each batch to its longest text; batches of 8 pad less than one of 20-30 (EmbeddingGemma on SciFact
abstracts, bfloat16, 2 cores: 2.0 docs/s against 0.9 in one batch of 32)."""

NO_LLM = ("config {name!r} needs a language model ({why}): run with `ragsvc eval run --generator-model smollm2` "
          "(in-process) or --generator-url URL (OpenAI-compatible server); from Python, RunOptions(llm=...)")


def check_llm(config: PipelineConfig, ctx: RunContext) -> None:
    why = config.needs_llm
    if why is not None and ctx.llm is None:
        raise InvalidInput(NO_LLM.format(name=config.name, why=why))


class CountingReranker:
    """Passes rerank calls through and keeps what each one reported (counts summed, timings listed)."""

    def __init__(self, inner: Reranker) -> None:
        self.name = inner.name
        self._inner = inner
        self.counts: Counter[str] = Counter()
        self.timings_ms: defaultdict[str, list[float]] = defaultdict(list)

    def rerank(self, query: str, hits: Sequence[Hit], *, top_n: int | None = None) -> RerankResult:
        result = self._inner.rerank(query, hits, top_n=top_n)
        self.counts.update(result.counts)
        for stage, ms in result.timings_ms.items():
            self.timings_ms[stage].append(ms)
        return result


def _reranker(spec: RerankSpec, ctx: RunContext) -> Reranker:
    if spec.name == "llm":
        assert ctx.llm is not None  # check_llm ran first
        return LLMReranker(ctx.llm)
    assert spec.model is not None  # RerankSpec requires it for these two
    folder = resolve_model(spec.model, ctx.models_root)
    if spec.name == "cross-encoder":
        key: tuple[str, ...] = ("cross-encoder", folder)
        if key not in ctx.shared:
            ctx.shared[key] = CrossEncoderReranker(folder)
        reranker: Reranker = ctx.shared[key]
        return reranker
    key = ("embedder", folder, spec.query_prefix, spec.document_prefix, str(spec.dtype))
    if key not in ctx.shared:
        embedder = SentenceTransformerEmbedder(folder, query_prefix=spec.query_prefix, dtype=spec.dtype,
                                               document_prefix=spec.document_prefix, batch_size=RERANK_BATCH)
        # one model under two document prompts (or precisions) gives two sets of vectors: the key tells them apart
        variant = hashlib.sha256(f"{spec.document_prefix}|{spec.dtype}".encode()).hexdigest()[:8]
        ctx.shared[key] = EmbedderReranker(embedder, ctx.store.catalog.vector_cache(),
                                           cache_key=f"{embedder.id}:{variant}")
    reranker = ctx.shared[key]
    return reranker


class PipelineKind:
    name = "pipeline"

    def parse(self, table: dict[str, Any], *, where: Where) -> PipelineConfig:
        return parse_pipeline_config(table, where=where)

    def prepare(self, config: PipelineConfig, ctx: RunContext) -> PipelineRetriever:
        return build_pipeline_retriever(config, ctx)


def build_pipeline_retriever(config: PipelineConfig, ctx: RunContext) -> PipelineRetriever:
    check_llm(config, ctx)
    if not ctx.corpus_collection:
        raise RuntimeError("pipeline configs search the run's corpus collection; RunContext.corpus_collection "
                           "is empty (the runner sets it)")
    started = time.perf_counter()
    hyde = None
    if config.hyde is not None and ctx.llm is not None:  # room for every passage of every concurrent query
        hyde = HyDE(ctx.llm, ctx.store.shared_embedder(), max_workers=config.hyde.n * config.hyde_concurrency,
                    cache_size=100_000)
    reranker = CountingReranker(_reranker(config.rerank, ctx)) if config.rerank is not None else None
    pipeline = RetrievalPipeline(ctx.store, hyde=hyde, rerankers={reranker.name: reranker} if reranker else {})
    if config.mode != "dense":  # the first lexical search opens (or builds) the BM25 index: not a query's cost
        ctx.store.lexical_search(ctx.corpus_collection, query="warm up", k=1)
    build_s = time.perf_counter() - started
    logger.info("pipeline config %s ready in %.2f s", config.name, build_s)
    return PipelineRetriever(ctx, config, pipeline, reranker, hyde, build_s)


class PipelineRetriever:
    def __init__(self, ctx: RunContext, config: PipelineConfig, pipeline: RetrievalPipeline,
                 reranker: CountingReranker | None, hyde: HyDE | None, build_s: float) -> None:
        self._ctx = ctx
        self._pipeline = pipeline
        self._reranker = reranker
        self._hyde = hyde
        self._config = config
        self._options = config.options(k=fetch_size(ctx.retrieval))
        self._prefetched: dict[str, HydeExpansion] = {}
        self._prefetch_s = 0.0
        self.build_s = build_s
        self.index_bytes = ctx.store.index_bytes(ctx.corpus_collection)
        self.served_by: Counter[str] = Counter()
        self._stage_ms: defaultdict[str, list[float]] = defaultdict(list)
        self._hyde_stats: defaultdict[str, list[float]] = defaultdict(list)

    def search(self, query_id: str, text: str, vector: np.ndarray) -> dict[str, float]:
        """Runs the whole pipeline from the query text (its own query embedding included, unlike `index`).

        Scores returned are rank-based (depth, depth - 1, ...): the pipeline's answer is its order, and its raw
        scores mix scales (reranked head: cosine or P(yes), which may tie; tail: fused scores), which metrics
        that sort by score (breaking ties by document id, as trec_eval does) would reorder."""
        result = self._pipeline.retrieve(self._ctx.corpus_collection, text, self._options)
        self._record(text, result)
        ranked = document_scores(result.hits, self._ctx.retrieval, query_id)
        return {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}

    def prefetch(self, queries: Mapping[str, str]) -> float:
        """HyDE expansions of all queries, `hyde_concurrency` queries at a time, into HyDE's cache; each search
        then finds its expansion there and this records what the expansion cost when it was made."""
        if self._hyde is None or self._config.hyde is None or self._config.hyde_concurrency <= 1:
            return 0.0
        hyde, options = self._hyde, self._config.hyde
        started = time.perf_counter()
        with ThreadPoolExecutor(self._config.hyde_concurrency, thread_name_prefix="hyde-prefetch") as pool:
            texts = list(dict.fromkeys(queries.values()))
            self._prefetched = dict(zip(texts, pool.map(lambda t: hyde.expand(t, options), texts), strict=True))
        self._prefetch_s = time.perf_counter() - started
        return self._prefetch_s

    def _record(self, query: str, result: RetrievalResult) -> None:
        timings = dict(result.timings_ms)
        expansion = result.hyde
        if expansion is not None and expansion.cached and query in self._prefetched:
            expansion = self._prefetched[query]  # the cost of making it, not of the cache lookup
            made_ms = expansion.generate_ms + expansion.embed_ms
            timings["total_ms"] += made_ms - timings.get("hyde_ms", 0.0)
            timings["hyde_ms"] = made_ms
        for stage, ms in timings.items():
            self._stage_ms[stage].append(ms)
        if expansion is not None:
            self._hyde_stats["generate_ms"].append(expansion.generate_ms)
            self._hyde_stats["embed_ms"].append(expansion.embed_ms)
            self._hyde_stats["completion_tokens"].append(expansion.completion_tokens)
        served = " + ".join(result.stages)
        self.served_by[f"{served} ({result.served_by})" if result.served_by is not None else served] += 1

    def stage_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"latency_ms": {s: percentiles(v) for s, v in self._stage_ms.items()}}
        if self._hyde_stats:
            tokens = self._hyde_stats.pop("completion_tokens")
            report["hyde"] = {s: percentiles(v) for s, v in self._hyde_stats.items()}
            report["hyde"]["completion_tokens_mean"] = round(float(np.mean(tokens)), 2)
            if self._prefetch_s:
                report["hyde"]["prefetch"] = {"queries_at_once": self._config.hyde_concurrency,
                                              "wall_s": round(self._prefetch_s, 2),
                                              "ms_per_query": round(self._prefetch_s * 1e3 / len(tokens), 1)}
            if self._ctx.llm is not None:
                report["hyde"]["model"] = model_label(self._ctx.llm.model)
        if self._reranker is not None:
            report["rerank"] = {"counts": dict(self._reranker.counts),
                                "timings_ms": {s: percentiles(v) for s, v in self._reranker.timings_ms.items()}}
        return report

    def close(self) -> None:
        if self._hyde is not None:
            self._hyde.close()  # the corpus collection is the runner's: it outlives every config


def model_label(model: str) -> str:
    """A model's name for results: the file or folder name of a local path, never the machine path itself."""
    return model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
