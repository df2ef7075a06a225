"""`ragsvc bench search`: recall@10, single-thread QPS and index bytes of every ragsvc index config, with raw
hnswlib (same M, an ef sweep) and faiss flat measured in the same run, plus HTTP vs in-process search QPS.

Honest by construction: real MiniLM embeddings of real text (never random padding), held-out queries, the
exact answer from brute force, fixed seeds, warm-up excluded, one query at a time on one thread, the git sha in
the JSON. The targets in `ragsvc.bench.targets` are evaluated and reported pass/fail in the output.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.configs import default_configs, run_config, select_configs
from ragsvc.bench.corpus import BenchCorpus, load_or_build_corpus
from ragsvc.bench.peers import faiss_flat_peer, hnswlib_peer
from ragsvc.bench.provenance import package_git_sha
from ragsvc.bench.search_records import HttpComparison, SearchBenchResult, SearchRow, Skipped
from ragsvc.bench.targets import evaluate_targets, with_ratios
from ragsvc.bench.timing import exact_topk

logger = logging.getLogger(__name__)

K = 10
NOTES = ("QPS: one query per call, BLAS/OpenMP held to 1 thread while timing (threadpoolctl); 4-shard "
         "configs fan out over ragsvc's shard thread pool, so they may use more than one core",
         "recall@10 is against brute-force inner product over the same float32 vectors",
         "the machine may be shared: compare ratios within one run (see machine.load_average)")
MEMORY_NOTE = ("index_bytes counts every byte held to answer a query: the ANN structure (graph links, codes, "
               "centroids) plus the vectors it reads for rescoring, whether in RAM or memory-mapped; faiss "
               "flat and hnswlib hold float32 vectors inside the index. Per-thread scratch is counted on neither "
               "side: hnswlib's visited list and the native sq8 walk's visited tags are 2 bytes a vector each")


def _gpu_section() -> dict[str, Any]:
    import faiss

    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if num_gpus == 0:
        return {"skipped": ["faiss-gpu-flat", "faiss-gpu-ivf"],
                "reason": "faiss.get_num_gpus() == 0: no CUDA GPU / no faiss-gpu build on this machine"}
    return {"skipped": ["faiss-gpu-flat", "faiss-gpu-ivf"],
            "reason": f"{num_gpus} GPU(s) seen, but GPU configs are not implemented in this benchmark yet"}


def _corpus_section(corpus: BenchCorpus) -> dict[str, Any]:
    return {"num_vectors": int(corpus.vectors.shape[0]), "num_queries": int(corpus.queries.shape[0]),
            "dim": int(corpus.vectors.shape[1]), "model_id": corpus.model_id, "corpus_hash": corpus.corpus_hash,
            "sources": corpus.source_counts, "query_kinds": dict(Counter(corpus.query_kinds)),
            "random_padding": 0, "cache": str(corpus.cache_path)}


def run_search_bench(
    *,
    num_vectors: int = 200_000,
    num_queries: int = 1_000,
    configs: str | None = None,
    cache_dir: Path,
    data_dir: Path | None = None,
    hnsw_ef_sweep: tuple[int, ...] | None = None,
    http: bool = True,
    http_vectors: int = 50_000,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
    partial_json: Path | None = None,
) -> SearchBenchResult:
    """Run the whole benchmark and return its result (see the module docstring).

    `cache_dir` holds the embedded corpus and the built indexes, reused by the next run. `progress`, when
    given, is asked for one `(done, total)` callback per long stage, by name (embedding the corpus, ingesting
    the HTTP collection). With `partial_json`, the result so far is rewritten there after every config, so a
    run cut short still leaves every finished measurement behind.
    """
    chosen = select_configs(default_configs(), configs)  # fail on a typo before any heavy work
    started = time.perf_counter()
    corpus = load_or_build_corpus(num_vectors=num_vectors, num_queries=num_queries, cache_dir=cache_dir,
                                  data_dir=data_dir, progress=progress("embedding corpus") if progress else None)
    vectors, queries = corpus.vectors, corpus.queries  # (n, dim), (q, dim)
    truth = exact_topk(vectors, queries, K)  # (q, k) row ids
    peer_kwargs = {"ef_sweep": hnsw_ef_sweep} if hnsw_ef_sweep else {}
    peers: list[SearchRow] = []
    for m in sorted({c.spec.hnsw_m for c in chosen}):  # raw hnswlib with the same M as each config
        peers += hnswlib_peer(vectors, queries, truth, m=m, ef_construction=chosen[0].spec.ef_construction,
                              cache_dir=corpus.cache_path / "peers", **peer_kwargs)
    peers.append(faiss_flat_peer(vectors, queries, truth))
    rows: list[SearchRow] = []
    http_section: HttpComparison | Skipped = Skipped("not reached yet")

    def result() -> SearchBenchResult:
        reference, ratio_rows, ratio_peers = with_ratios(rows, peers)
        return SearchBenchResult(
            git_sha=package_git_sha(), created_unix=int(time.time()), k=K,
            machine={"cpus": os.cpu_count(), "platform": platform.platform(), "threads_per_query": 1,
                     "load_average": list(os.getloadavg())},
            corpus=_corpus_section(corpus), memory_note=MEMORY_NOTE, notes=NOTES,
            configs=tuple(ratio_rows), peers=tuple(ratio_peers), reference_hnswlib=reference,
            gpu=_gpu_section(), http=http_section,
            targets=tuple(evaluate_targets(ratio_rows, reference, http_section)),
            wall_s=round(time.perf_counter() - started, 1),
        )

    for config in chosen:
        rows += run_config(config, vectors, queries, truth, index_dir=corpus.cache_path / "indexes" / config.name)
        if partial_json is not None:
            write_json(partial_json, result().to_json())
    http_section = _http_section(corpus, vectors, queries, http=http, http_vectors=http_vectors,
                                 progress=progress("ingesting bench collection") if progress else None)
    return result()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON through a temporary file, so a reader never sees half a result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _http_section(corpus: BenchCorpus, vectors: np.ndarray, queries: np.ndarray, *, http: bool,
                  http_vectors: int, progress: Callable[[int, int], None] | None) -> HttpComparison | Skipped:
    if not http:
        return Skipped("--no-http")
    from ragsvc.bench.http_search import http_vs_in_process
    from ragsvc.index.spec import IndexSpec

    n = min(http_vectors, vectors.shape[0])
    texts = corpus.texts[:n]
    sub = np.ascontiguousarray(vectors[:n])  # (n, dim)
    return http_vs_in_process(corpus.cache_path, texts, sub, queries, exact_topk(sub, queries, K),
                              model_id=corpus.model_id, spec=IndexSpec(), progress=progress)
