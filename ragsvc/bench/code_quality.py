"""Code retrieval quality for `ragsvc bench code`: CoSQA (query -> code) and docstring -> function.

Both index definition chunks into a real VectorStore collection and score, on the same dense candidates,
dense-only ranking against dense + symbol-graph re-ranking at several weights; BM25 (bm25s) over the same chunk
texts runs beside them as the lexical peer. Metrics are recall@10 and MRR@10 over deduplicated targets
(a definition split into parts counts once).
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ragsvc.code.analysis import FileAnalysis, analyse_bytes, to_document
from ragsvc.code.chunker import ChunkConfig
from ragsvc.code.graph import SymbolGraph
from ragsvc.code.repo_map import build_map
from ragsvc.code.search import graph_rerank
from ragsvc.code.searcher import CollectionSearcher
from ragsvc.code.walker import walk_repository
from ragsvc.evals.loaders import load_beir
from ragsvc.evals.metrics import mrr_at_k, recall_at_k
from ragsvc.evals.stats import paired_permutation_test
from ragsvc.retrieval.vector_store import VectorStore
from ragsvc.types import Hit

logger = logging.getLogger(__name__)

K = 10
CANDIDATES = 50


@dataclass(frozen=True, slots=True)
class CodeTask:
    """Analysed files (what gets indexed), queries, and the target keys each query should find."""

    name: str
    analyses: list[FileAnalysis]
    queries: dict[str, str]
    qrels: dict[str, set[str]]
    key_of: Callable[[str, str], str]
    """(path, symbol) of a hit -> the key qrels use."""


@dataclass(frozen=True, slots=True)
class MapHitRate:
    """How often a query's target definition is among those a repo map of `max_tokens` shows."""

    max_tokens: int
    mean_definitions_shown: float
    hit_rate_no_query: float
    hit_rate_query_aware: float
    hit_rate_dense_top_n: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TaskScores:
    """One retrieval task's result: each ranking's scores over the same queries and dense candidates."""

    task: str
    num_queries: int
    num_files: int
    num_definitions: int
    candidates: int
    results: Mapping[str, Mapping[str, float]]
    """Ranking (dense, dense+graph@<weight>, bm25) -> recall@10, mrr@10 and p_mrr_vs_dense (paired test)."""
    chunks: int | None = None
    """Chunks indexed for the task."""
    repo_map: MapHitRate | None = None
    """Docstring tasks only: CoSQA's functions do not call each other, so there is no map to rank."""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"task": self.task, "num_queries": self.num_queries, "num_files": self.num_files,
                                  "num_definitions": self.num_definitions, "candidates": self.candidates,
                                  "results": {name: dict(scores) for name, scores in self.results.items()}}
        if self.chunks is not None:
            out["chunks"] = self.chunks
        return out if self.repo_map is None else out | {"repo_map": self.repo_map.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskScores:
        repo_map = data.get("repo_map")
        return cls(data["task"], data["num_queries"], data["num_files"], data["num_definitions"],
                   data["candidates"], data["results"], data.get("chunks"),
                   None if repo_map is None else MapHitRate(**repo_map))

    def with_parts(self, *, chunks: int, repo_map: MapHitRate | None) -> TaskScores:
        return replace(self, chunks=chunks, repo_map=repo_map)


def cosqa_task(path: Path, *, max_queries: int | None = None) -> CodeTask:
    """Each CoSQA function becomes a one-file module `<corpus id>.py`; a hit's key is its corpus id."""
    data = load_beir(path, max_queries=max_queries)
    analyses = [analyse_bytes(doc.text.encode("utf-8"), rel_path=f"{cid}.py", language="python")
                for cid, doc in data.corpus.items()]
    qrels = {qid: {cid for cid, grade in rels.items() if grade > 0} for qid, rels in data.qrels.items()}
    return CodeTask("cosqa", analyses, dict(data.queries), qrels, lambda p, s: p.removesuffix(".py"))


def docstring_task(package_dir: Path, *, max_queries: int = 400) -> CodeTask:
    """Definitions of an installed package, docstrings stripped from their chunks; each docstring's first
    paragraph is a query whose target is its definition. Docstrings shared by several definitions are dropped."""
    analyses: list[FileAnalysis] = []
    candidates: dict[str, list[str]] = {}
    for source in walk_repository(package_dir).files:
        if source.language != "python":
            continue
        raw = source.path.read_bytes()
        analysis = analyse_bytes(raw, rel_path=source.rel_path, language="python",
                                 chunk_config=ChunkConfig(strip_docstrings=True))
        analyses.append(analysis)
        docs = _docstrings(raw)
        for d in analysis.tags.definitions:
            query = docs.get((d.name, d.end_line))
            if query:
                candidates.setdefault(query, []).append(f"{d.rel_path}::{d.symbol}")
    unique = sorted((targets[0], q) for q, targets in candidates.items() if len(targets) == 1)[:max_queries]
    queries = {f"q{i}": q for i, (_, q) in enumerate(unique)}
    qrels = {f"q{i}": {key} for i, (key, _) in enumerate(unique)}
    return CodeTask(f"docstring:{package_dir.name}", analyses, queries, qrels, lambda p, s: f"{p}::{s}")


def _docstrings(raw: bytes) -> dict[tuple[str, int], str]:
    """(name, end line) -> first paragraph of the docstring, for definitions with at least 4 words of one."""
    try:
        tree = ast.parse(raw)
    except (SyntaxError, ValueError):
        return {}
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node) or ""
            first = " ".join(re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0].split())
            if len(first.split()) >= 4 and node.end_lineno is not None:
                out[(node.name, node.end_lineno)] = first
    return out


def index_task(store: VectorStore, task: CodeTask, collection: str, *, batch: int = 64) -> int:
    """Write the task's files into a fresh collection; returns the number of chunks."""
    store.create_collection(collection)
    docs = [d for d in (to_document(a) for a in task.analyses) if d is not None]
    for start in range(0, len(docs), batch):
        store.add_documents(collection, docs[start : start + batch])
    return store.get_collection(collection).num_chunks


def _dedupe(keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _per_query_mrr(ranked: dict[str, list[str]], qrels: dict[str, set[str]]) -> list[float]:
    return [mrr_at_k(ranked[q], dict.fromkeys(qrels[q], 1), K) for q in qrels]


def _score(ranked: dict[str, list[str]], qrels: dict[str, set[str]], *,
           baseline: dict[str, list[str]] | None = None) -> dict[str, float]:
    """recall@10 and MRR@10; with a baseline run, the paired permutation test's p-value on per-query MRR."""
    recalls = [recall_at_k(ranked[q], dict.fromkeys(qrels[q], 1), K) for q in qrels]
    mrrs = _per_query_mrr(ranked, qrels)
    out = {"recall@10": round(sum(recalls) / len(recalls), 4), "mrr@10": round(sum(mrrs) / len(mrrs), 4)}
    if baseline is not None and baseline is not ranked:
        out["p_mrr_vs_dense"] = round(paired_permutation_test(mrrs, _per_query_mrr(baseline, qrels)), 4)
    return out


def evaluate_task(store: VectorStore, task: CodeTask, collection: str, *,
                  graph_weights: Sequence[float] = (0.05, 0.1, 0.2)) -> TaskScores:
    """Dense vs dense + graph (each weight) on the same candidates, and BM25 over the same chunks."""
    graph = SymbolGraph([a.tags for a in task.analyses])

    def keys(hits: Sequence[Hit]) -> list[str]:
        return _dedupe([task.key_of(h.metadata.get("path", ""), h.metadata.get("symbol", "")) for h in hits])

    runs: dict[str, dict[str, list[str]]] = {"dense": {}, **{f"dense+graph@{w}": {} for w in graph_weights}}
    for qid, query in task.queries.items():
        hits = store.search(collection, query=query, k=CANDIDATES).hits
        runs["dense"][qid] = keys(hits)
        for w in graph_weights:
            runs[f"dense+graph@{w}"][qid] = keys(graph_rerank(hits, graph, graph_weight=w))
    runs["bm25"] = _bm25_run(task)
    return TaskScores(task.name, len(task.queries), len(task.analyses), len(graph.definitions), CANDIDATES,
                      {name: _score(run, task.qrels, baseline=runs["dense"]) for name, run in runs.items()})


def map_hit_rate(store: VectorStore, task: CodeTask, collection: str, *, max_tokens: int = 1024) -> MapHitRate:
    """How often a query's target definition is shown in the repo map fitted to `max_tokens`: without the query
    (the graph alone), with it (dense hits + names personalise PageRank), and for the dense top-N definitions
    alone (N = as many as the query-aware map showed: the peer a map replaces)."""
    graph = SymbolGraph([a.tags for a in task.analyses])
    searcher = CollectionSearcher(store, collection)
    plain = build_map(graph, max_tokens=max_tokens)
    plain_shown = {task.key_of(d.rel_path, d.symbol) for d, _ in plain.ranked[: plain.num_definitions]}
    hits = {"no_query": 0, "query_aware": 0, "dense_top_n": 0}
    shown_counts = []
    for qid, query in task.queries.items():
        target = next(iter(task.qrels[qid]))
        repo_map = build_map(graph, max_tokens=max_tokens, query=query, searcher=searcher)
        shown = [task.key_of(d.rel_path, d.symbol) for d, _ in repo_map.ranked[: repo_map.num_definitions]]
        shown_counts.append(len(shown))
        dense = _dedupe([task.key_of(h.metadata.get("path", ""), h.metadata.get("symbol", ""))
                         for h in store.search(collection, query=query, k=max(1, 2 * len(shown))).hits])
        hits["no_query"] += target in plain_shown
        hits["query_aware"] += target in shown
        hits["dense_top_n"] += target in dense[: len(shown)]
    n = len(task.queries)
    return MapHitRate(max_tokens, round(sum(shown_counts) / max(1, n), 1),
                      *(round(hits[k] / max(1, n), 4) for k in ("no_query", "query_aware", "dense_top_n")))


def _bm25_run(task: CodeTask) -> dict[str, list[str]]:
    import bm25s

    texts: list[str] = []
    owners: list[str] = []
    for analysis in task.analyses:
        for chunk in analysis.chunks:
            texts.append(chunk.text)
            owners.append(task.key_of(analysis.rel_path, chunk.symbol))
    # Split identifiers so `parse_header` matches "parse" and "header" in a query.
    split = [re.sub(r"[_.]|(?<=[a-z])(?=[A-Z])", " ", t) for t in texts]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(split, show_progress=False), show_progress=False)
    qids = list(task.queries)
    tokens = bm25s.tokenize([task.queries[q] for q in qids], show_progress=False)
    found, _ = retriever.retrieve(tokens, k=min(CANDIDATES, len(texts)), show_progress=False)
    return {qid: _dedupe([owners[int(i)] for i in row]) for qid, row in zip(qids, found, strict=True)}
