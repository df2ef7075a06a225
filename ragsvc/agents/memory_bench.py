"""Memory retrieval at scale: one agent with 100k memories, in-process, synthetic vectors.

The vectors are random unit vectors of MiniLM's width (384), not embeddings of text: timing depends on the
count and width, not on what the vectors mean. Queries are stored vectors plus noise, so each has true near
neighbours as a real query would. Importance is uniform on 1-10, and last access spreads over 30 simulated days.

It measures:
- `retrieve` p50/p95 on the per-agent index (the design MemoryStream uses), with and without the write that
  marks the returned memories accessed, and each stage's p50;
- the stage where the two layouts differ, the nearest-memory candidates: per-agent index vs one shared index
  over every agent's memories, filtered to the agent's ids (which a filtered collection must look up and pass
  on each query);
- agreement with the exact oracle: the top 10 of the candidate union against the top 10 of scoring every
  memory (all 100k relevances, min-max over all), as overlap@10.

Run: `python -m ragsvc.agents.memory_bench DATA_DIR [--memories N] [--others N] [--queries N]` (JSON to stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.agents.memory import MEMORY_INDEX_SPEC, MemoryStream, RetrievalOptions
from ragsvc.agents.memory_columns import MemoryColumns
from ragsvc.agents.scoring import score_candidates, top_k
from ragsvc.errors import InvalidInput
from ragsvc.index.collection_index import CollectionIndex
from ragsvc.store.catalog import Catalog
from ragsvc.store.memories import MemoryTables, NewMemory

logger = logging.getLogger(__name__)

AGENT = "bench-agent"
DIM = 384
BATCH = 10_000


class VectorsOnly:
    """An Embedder stand-in for vectors given directly: it has a width and refuses text."""

    id = "synthetic-384"
    dim = DIM

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        raise RuntimeError("the memory bench passes vectors; it embeds no text")

    def embed_query(self, text: str) -> np.ndarray:
        raise RuntimeError("the memory bench passes query vectors; it embeds no text")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return []


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill(tables: MemoryTables, agent: str, n: int, rng: np.random.Generator) -> None:
    """n synthetic observations for `agent`, written in batches (importance and times drawn at random)."""
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        hours = np.sort(rng.uniform(0, 720, size)) + start  # created and last accessed over ~30 days
        importance = rng.integers(1, 11, size).astype(float)
        memories = [NewMemory(kind="observation", text=f"{agent} observation {start + i}", created_h=float(h),
                              importance=float(w)) for i, (h, w) in enumerate(zip(hours, importance, strict=True))]
        tables.append(agent, memories, _unit(rng, size))


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def _time(calls: Sequence[Callable[[], object]], *, warmup: int = 5) -> list[float]:
    for call in calls[:warmup]:
        call()
    out = []
    for call in calls:
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def exact_top(tables: MemoryTables, agent: str, vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, *,
              now_h: float, options: RetrievalOptions) -> set[int]:
    """The oracle: score every memory of the agent (vectors (n, dim) aligned with ids) and take the top k."""
    cols = tables.scoring_columns(agent)
    order = np.searchsorted(cols.ids, ids)
    parts = score_candidates(relevance=vectors @ q, importance=cols.importance[order],
                             last_accessed_h=cols.last_accessed_h[order], now_h=now_h, weights=options.weights)
    return {int(ids[p]) for p in top_k(parts.total, options.k)}


def union_top(tables: MemoryTables, vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, nearest: np.ndarray, *,
              now_h: float, options: RetrievalOptions) -> set[int]:
    """Top k of MemoryStream's candidate union, but with the exact nearest memories in place of the ANN's: what
    the union alone costs against scoring every memory, apart from ANN recall."""
    cols = tables.scoring_columns(AGENT)
    prior = MemoryColumns(cols).top_prior(options.prior, now_h=now_h, weights=options.weights)
    union = np.unique(np.concatenate([nearest, prior]))
    rows, cols_rows = np.searchsorted(ids, union), np.searchsorted(cols.ids, union)
    parts = score_candidates(relevance=vectors[rows] @ q, importance=cols.importance[cols_rows],
                             last_accessed_h=cols.last_accessed_h[cols_rows], now_h=now_h, weights=options.weights)
    return {int(union[p]) for p in top_k(parts.total, options.k)}


def run(data_dir: Path, *, num_memories: int = 100_000, num_others: int = 100_000, num_queries: int = 200,
        seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    catalog = Catalog(data_dir / "catalog.duckdb")
    tables = catalog.memory_tables()
    report: dict[str, Any] = {"num_memories": num_memories, "num_other_agents_memories": num_others, "dim": DIM,
                              "num_queries": num_queries, "seed": seed, "vectors": "synthetic random unit vectors"}
    t = time.perf_counter()
    if tables.count(AGENT) != num_memories:
        tables.delete_agent(AGENT)
        _fill(tables, AGENT, num_memories, rng)
        for j in range(4):
            tables.delete_agent(f"other-{j}")
            _fill(tables, f"other-{j}", num_others // 4, rng)
    report["fill_s"] = round(time.perf_counter() - t, 1)
    touched = tables.recent(AGENT, limit=1)[0]
    if tables.scoring_columns(AGENT).last_accessed_h.max() > touched.created_h:
        raise InvalidInput(f"{data_dir} holds memories an earlier run marked accessed, which changes what is "
                           "measured; run the bench on an empty folder")

    t = time.perf_counter()
    stream = MemoryStream(tables, AGENT, embedder=VectorsOnly(), index_dir=data_dir / "agents" / AGENT / "index")
    report["open_agent_index_s"] = round(time.perf_counter() - t, 1)
    stream.save()
    ids, vectors = map(np.concatenate, zip(*tables.vector_source(AGENT, DIM).iter_vectors(), strict=True))
    picks = rng.choice(len(ids), num_queries)
    queries = vectors[picks] + 0.08 * rng.standard_normal((num_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    now_h = float(tables.scoring_columns(AGENT).last_accessed_h.max()) + 1.0
    read_only = RetrievalOptions(mark_accessed=False)

    stages: dict[str, list[float]] = {}
    overlap: list[float] = []
    recall: list[float] = []
    union_overlap: list[float] = []
    stream_index = CollectionIndex.open(data_dir / "agents" / AGENT / "index", MEMORY_INDEX_SPEC, DIM,
                                        tables.vector_source(AGENT, DIM))
    for i, q in enumerate(queries):
        result = stream.retrieve(q, now_h=now_h, options=read_only)
        if i >= 5:
            for name, ms in result.timings_ms.items():
                stages.setdefault(name, []).append(ms)
        if i < 20:
            exact = exact_top(tables, AGENT, vectors, ids, q, now_h=now_h, options=read_only)
            overlap.append(len(exact & {m.memory.id for m in result.memories}) / read_only.k)
            exact_near = ids[np.argpartition(-(vectors @ q), read_only.relevant)[: read_only.relevant]]
            recall.append(len(np.intersect1d(exact_near, stream_index.search(q, read_only.relevant).ids))
                          / read_only.relevant)
            union_overlap.append(len(exact & union_top(tables, vectors, ids, q, exact_near, now_h=now_h,
                                                       options=read_only)) / read_only.k)
    report["retrieve_per_agent_index"] = _percentiles(stages["total_ms"])
    report["retrieve_stage_p50_ms"] = {k: round(float(np.median(v)), 3) for k, v in stages.items()}
    report["overlap_at_10_vs_exact_all_memories"] = round(float(np.mean(overlap)), 3)
    report["hnsw_recall_at_100_nearest"] = round(float(np.mean(recall)), 3)
    report["overlap_at_10_vs_exact_with_exact_nearest_candidates"] = round(float(np.mean(union_overlap)), 3)
    stream_index.close()
    marking = replace(read_only, mark_accessed=True)
    report["retrieve_per_agent_index_with_mark_accessed"] = _percentiles(
        _time([partial(stream.retrieve, q, now_h=now_h, options=marking) for q in queries]))
    stream.close()

    t = time.perf_counter()
    shared = CollectionIndex.open(data_dir / "agents" / "shared-index", MEMORY_INDEX_SPEC, DIM,
                                  tables.vector_source(None, DIM))
    shared.save()
    report["open_shared_index_s"] = round(time.perf_counter() - t, 1)
    own = CollectionIndex.open(data_dir / "agents" / AGENT / "index", MEMORY_INDEX_SPEC, DIM,
                               tables.vector_source(AGENT, DIM))
    n = read_only.relevant
    report["nearest_candidates_per_agent_index"] = _percentiles(_time([partial(own.search, q, n) for q in queries]))

    def filtered(q: np.ndarray) -> None:
        allowed = tables.scoring_columns(AGENT).ids  # a filtered collection looks the agent's ids up per query
        shared.search(q, n, allowed_ids=allowed)

    report["nearest_candidates_shared_index_filtered"] = _percentiles(
        _time([partial(filtered, q) for q in queries[: max(20, num_queries // 4)]], warmup=2))
    allowed = tables.scoring_columns(AGENT).ids
    report["nearest_candidates_shared_index_ids_cached"] = _percentiles(
        _time([partial(shared.search, q, n, allowed_ids=allowed) for q in queries[: max(20, num_queries // 4)]],
              warmup=2))
    own.close()
    shared.close()
    catalog.close()
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    report = run(args.data_dir, num_memories=args.memories, num_others=args.others, num_queries=args.queries)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
