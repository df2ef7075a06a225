"""Run a suite: load the dataset, ingest it once, evaluate every config, write results and the report.

Order of work, and why:
1. The corpus goes into one warm-up collection first (`ingest_s`), which fills the store's embedding cache;
   each config's collection then costs only chunking, the catalog write and its index (`build_s`).
2. Query embeddings are computed once (batched) and every config searches by vector, so latencies compare
   indexes, not the (identical) query encoder; the encoder's batched cost per query is `query_embed_ms`.
3. Each finished config is checkpointed (atomically) under the cache folder. After an interrupt a re-run
   skips the configs already done; after a complete run the checkpoints are removed so the next run measures
   afresh. The results JSON is written last, atomically, so `eval/results/` never holds half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ragsvc.embed.embedder import Embedder, embed_path
from ragsvc.errors import InvalidInput
from ragsvc.evals.answer_run import answer_suite
from ragsvc.evals.answer_stage import TextGenerator
from ragsvc.evals.configs import EvalConfig, Retriever, RunContext
from ragsvc.evals.kinds import config_kind
from ragsvc.evals.loaders import RetrievalDataset, load_beir
from ragsvc.evals.metrics import evaluate_run, mean_metrics
from ragsvc.evals.pipeline_config import PipelineConfig, resolve_model
from ragsvc.evals.pipeline_retriever import NO_LLM, model_label
from ragsvc.evals.records import ConfigResult, LatencySummary, MetricSummary, RunResult
from ragsvc.evals.report import write_report
from ragsvc.evals.results import Checkpoints, check_out_path, git_sha, write_json_atomic
from ragsvc.evals.stats import bootstrap_ci, percentiles
from ragsvc.evals.suite import Suite
from ragsvc.index.spec import IndexSpec
from ragsvc.llm.generator import Generator
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import ChunkInput, DocumentInput

logger = logging.getLogger(__name__)




@dataclass(frozen=True, slots=True)
class RunOptions:
    out: Path | None = None
    """Results JSON path; default `<results_dir>/<suite>-<UTC timestamp>.json`."""
    results_dir: Path = Path("eval/results")
    cache_dir: Path = Path("eval/cache")
    """Holds the store (catalog + embedding cache, kept between runs) and the checkpoints."""
    progress: Callable[[str], Callable[[int, int], None]] | None = None
    """Progress reporting, when given: called with a config's name, it returns the `(queries done, total)`
    callback for that config's searches; also turns on the embedder's own progress while ingesting."""
    fresh: bool = False
    """Ignore checkpoints of an interrupted run and evaluate every config again."""
    generator: TextGenerator | None = None
    """Answers questions for the judged answer stage; None: a text adapter of `llm`, or the stage is skipped."""
    judge: TextGenerator | None = None
    """Judges faithfulness and citations; defaults to `generator`."""
    llm: Generator | None = None
    """The run's language model for configs that need one (HyDE, the LLM reranker) and for the answer
    strategies (none | single | flare); `generator` defaults to a text adapter of it."""
    models_root: Path | None = None
    """Folder holding the model folders a suite names (a reranker's `model`)."""
    keep_collections: bool = False
    """Keep each config's collection in the store after the run (for poking at it); the corpus collection
    that holds the embedding cache is always kept."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    results_path: Path
    report_path: Path
    results: RunResult
    resumed: tuple[str, ...]
    """Configs taken from checkpoints instead of being evaluated in this run."""


def corpus_documents(dataset: RetrievalDataset, chunking: str) -> list[DocumentInput]:
    docs = []
    for doc in dataset.corpus.values():
        text = doc.full_text
        chunks = [ChunkInput(text, 0, len(text))] if chunking == "document" else None
        docs.append(DocumentInput(text=text, id=doc.id, metadata={"title": doc.title} if doc.title else {},
                                  chunks=chunks))
    return docs


def _warm_cache(store: VectorStore, suite: Suite, documents: list[DocumentInput], *,
                progress: bool) -> tuple[str, float]:
    """Embed the corpus once into a warm-up collection (kept between runs; the `pipeline` kind searches it);
    returns its name and the seconds it took."""
    r = suite.retrieval
    tag = hashlib.sha256(f"{r.chunking}-{r.chunk_tokens}-{r.chunk_overlap}".encode()).hexdigest()[:8]
    name = f"eval-{suite.name}-corpus-{tag}"
    if name not in {c.name for c in store.list_collections()}:
        store.create_collection(name, index=IndexSpec(backend="exact"), chunk_tokens=r.chunk_tokens,
                                chunk_overlap=r.chunk_overlap)
    started = time.perf_counter()
    store.add_documents(name, documents, progress=progress)
    return name, time.perf_counter() - started


def _config_prefix(suite: Suite) -> str:
    """Collection names of a suite's configs: eval-<suite>-c-<config> (<= 64 characters by the name rules)."""
    return f"eval-{suite.name}-c-"


def _drop_leftovers(store: VectorStore, suite: Suite) -> None:
    """Delete config collections an interrupted run left behind (configs resumed from checkpoints)."""
    prefix = _config_prefix(suite)
    for info in store.list_collections():
        if info.name.startswith(prefix):
            store.delete_collection(info.name)


def _embed_queries(embedder: Embedder, queries: dict[str, str]) -> tuple[dict[str, np.ndarray], float]:
    """All query vectors, batched when that gives the same vectors; returns them and the mean ms per query.

    One `encode` call per query costs a fixed overhead that dominates on a busy 2-core machine (over a
    second each under load), so queries are embedded in one batch: through `embed_queries` when the embedder
    has it, or through `embed_documents` when query and document prefixes are identical (MiniLM has none).
    """
    ids, texts = list(queries), list(queries.values())
    started = time.perf_counter()
    batch = getattr(embedder, "embed_queries", None)
    same_prefix = getattr(embedder, "query_prefix", None) == getattr(embedder, "document_prefix", "")
    if callable(batch):
        matrix = batch(texts)  # (num_queries, dim)
    elif same_prefix:
        matrix = embedder.embed_documents(texts)  # (num_queries, dim)
    else:
        matrix = np.stack([embedder.embed_query(t) for t in texts]) if texts else np.zeros((0, embedder.dim))
    mean_ms = (time.perf_counter() - started) * 1000.0 / max(len(texts), 1)
    return dict(zip(ids, np.asarray(matrix, dtype=np.float32), strict=True)), mean_ms


def evaluate_config(config: EvalConfig, retriever: Retriever, dataset: RetrievalDataset,
                    vectors: dict[str, np.ndarray], suite: Suite, *,
                    progress: Callable[[int, int], None] | None = None) -> ConfigResult:
    """Search every query, time each search, and score the run against the qrels."""
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    prefetch_s = retriever.prefetch(dataset.queries)
    for qid, text in dataset.queries.items():
        started = time.perf_counter()
        run[qid] = retriever.search(qid, text, vectors[qid])
        latencies.append((time.perf_counter() - started) * 1000.0)
        if progress is not None:
            progress(len(run), len(dataset.queries))
    per_query = evaluate_run(dataset.qrels, run, suite.retrieval.metrics)
    metrics = {m: MetricSummary(mean, bootstrap_ci([per_query[q][m] for q in per_query],
                                                   num_samples=suite.retrieval.bootstrap_samples),
                                {q: per_query[q][m] for q in per_query})
               for m, mean in mean_metrics(per_query).items()}
    return ConfigResult(
        name=config.name, kind=config.kind, params=config.to_dict(), metrics=metrics,
        latency_ms=LatencySummary(**percentiles(latencies)), build_s=round(retriever.build_s, 3),
        prefetch_s=round(prefetch_s, 3) if prefetch_s else None, index_bytes=retriever.index_bytes,
        num_queries=len(per_query), served_by=dict(retriever.served_by), stages=retriever.stage_report() or None,
    )


def _config_key(suite: Suite, config: EvalConfig) -> str:
    payload = json.dumps([suite.fingerprint, config.to_dict()], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _output_path(suite: Suite, options: RunOptions) -> Path:
    if options.out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return options.results_dir / f"{suite.name}-{stamp}.json"
    return check_out_path(Path(options.out))


def _run_configs(suite: Suite, ctx: RunContext, dataset: RetrievalDataset, vectors: dict[str, np.ndarray],
                 checkpoints: Checkpoints, *, progress: Callable[[str], Callable[[int, int], None]] | None
                 ) -> tuple[list[ConfigResult], list[str], dict[str, Retriever]]:
    """Evaluate each config not already checkpointed; returns results in suite order, resumed names, built."""
    results, resumed, built = [], [], {}
    for config in suite.configs:
        key = _config_key(suite, config)
        done = checkpoints.load(config.name, key)
        if done is not None:
            logger.info("config %s: resumed from checkpoint", config.name)
            results.append(done)
            resumed.append(config.name)
            continue
        retriever = config_kind(config.kind).prepare(config, ctx)  # type: ignore[union-attr]
        built[config.name] = retriever
        result = evaluate_config(config, retriever, dataset, vectors, suite,
                                 progress=progress(config.name) if progress is not None else None)
        checkpoints.save(config.name, key, result)
        results.append(result)
    return results, resumed, built


def _check_parts(suite: Suite, options: RunOptions) -> None:
    """Every model a config names resolves, and a config that needs the language model has one."""
    for config in suite.configs:
        if not isinstance(config, PipelineConfig):
            continue
        if config.needs_llm is not None and options.llm is None:
            raise InvalidInput(NO_LLM.format(name=config.name, why=config.needs_llm))
        if config.rerank is not None and config.rerank.model is not None:
            resolve_model(config.rerank.model, options.models_root)


def run_suite(suite: Suite, *, options: RunOptions = RunOptions(), embedder: Embedder | None = None) -> RunOutcome:
    dataset = load_beir(suite.dataset_path, split=suite.dataset.split, max_queries=suite.dataset.max_queries)
    out_path = _output_path(suite, options)  # decided up front so a bad --out fails before the work
    checkpoints = Checkpoints(options.cache_dir / "checkpoints" / suite.name)
    if options.fresh:
        checkpoints.clear()
    _check_parts(suite, options)  # a missing model or generator fails now, not after the corpus is embedded
    store = VectorStore.open(options.cache_dir / "store", embedder=embedder)
    try:
        documents = corpus_documents(dataset, suite.retrieval.chunking)
        corpus, ingest_s = _warm_cache(store, suite, documents, progress=options.progress is not None)
        vectors, embed_ms = _embed_queries(store.embedder, dataset.queries)
        ctx = RunContext(store, documents, suite.retrieval, collection_prefix=_config_prefix(suite),
                         corpus_collection=corpus, llm=options.llm, models_root=options.models_root)
        results, resumed, built = _run_configs(suite, ctx, dataset, vectors, checkpoints, progress=options.progress)
        summary = RunResult(
            suite=suite.name, dataset=suite.dataset_label, configs=tuple(results),
            git_sha=git_sha(suite.path.parent), created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            embedder=store.embedder.id, embed_path=embed_path(store.embedder),
            llm=model_label(options.llm.model) if options.llm is not None else None,
            num_queries=len(dataset.queries), num_documents=len(dataset.corpus), ingest_s=round(ingest_s, 3),
            query_embed_ms=round(embed_ms, 3), baseline=suite.baseline, references=suite.references,
            answer=answer_suite(suite, dataset, ctx, built, generate=options.generator, judge=options.judge,
                                llm=options.llm, progress=options.progress),
        )
        if not options.keep_collections:
            for retriever in built.values():
                retriever.close()
            _drop_leftovers(store, suite)
    finally:
        store.close()
    write_json_atomic(out_path, summary.to_json())
    report_path = write_report(summary, out_path)
    checkpoints.clear()
    return RunOutcome(out_path, report_path, summary, tuple(resumed))
