"""`ragsvc bench code`: code-index quality (CoSQA, docstring -> function) and speed, as JSON.

Speed: index this repository and a subset of an installed large library (transformers' sources) into fresh
collections: files/s and chunks/s end to end (walk, parse, chunk, embed, write), with the parse-only rate
beside it and the store's plain-text ingest of the same files as the peer; re-index after editing one file
(incremental) against the full index; repo-map latency p50/p95, with and without a query. The model load is
excluded (one embedder, warmed up first); every other number is wall time, so compare rows of one run only.
"""

from __future__ import annotations

import importlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragsvc.bench.code_quality import TaskScores

DEFAULT_LIBRARIES = ("requests", "click", "jinja2")
"""Installed packages for the docstring -> function task; jinja2 is held out from tuning the map."""
DEFAULT_SUBSET = ("models/bert", "models/gpt2", "models/llama", "generation/logits_process.py")
MAP_QUERIES = ("where are retries handled", "how is the attention mask built", "load weights from a checkpoint",
               "sample the next token with temperature", "split text into chunks")


@dataclass(frozen=True, slots=True)
class CodeBenchResult:
    """One run of the code benchmarks. The speed section stays a JSON object: each measure reports its own."""

    git_sha: str
    created_unix: int
    cpu_count: int | None
    load_avg_at_start: tuple[float, ...]
    embedder: str
    torch_threads: int
    config: Mapping[str, Any]
    """libraries, max_queries, subset."""
    quality: tuple[TaskScores, ...] | None = None
    """One per retrieval task (CoSQA, then each library's docstrings); None when not run."""
    speed: Mapping[str, Any] | None = None
    """Indexing, re-indexing and repo-map latency; None when not run."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "benchmark": "code", "git_sha": self.git_sha, "created_unix": self.created_unix,
            "cpu_count": self.cpu_count, "load_avg_at_start": list(self.load_avg_at_start),
            "embedder": self.embedder, "torch_threads": self.torch_threads, "config": dict(self.config)}
        if self.quality is not None:
            out["quality"] = [task.to_json() for task in self.quality]
        return out if self.speed is None else out | {"speed": dict(self.speed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeBenchResult:
        from ragsvc.bench.code_quality import TaskScores

        quality = data.get("quality")
        return cls(data["git_sha"], data["created_unix"], data["cpu_count"], tuple(data["load_avg_at_start"]),
                   data["embedder"], data["torch_threads"], data["config"],
                   None if quality is None else tuple(TaskScores.from_json(t) for t in quality), data.get("speed"))


def _embedder(threads: int = 2) -> Any:
    import torch

    from ragsvc.embed.embedder import SentenceTransformerEmbedder

    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    embedder = SentenceTransformerEmbedder()
    embedder.embed_documents(["def warm_up():\n    return 1"] * 8)  # first-call costs excluded
    return embedder


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2), "n": len(ordered)}


def copy_subset(library_dir: Path, parts: tuple[str, ...], into: Path) -> Path:
    """Copy the chosen folders/files of a library (never edit the installed one: we touch files later)."""
    for part in parts:
        source = library_dir / part
        target = into / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return into


def index_speed(store: Any, root: Path, collection: str, *, peer: bool) -> dict[str, Any]:
    from ragsvc.code.analysis import analyse_repository
    from ragsvc.code.indexer import RepoIndexer

    started = time.perf_counter()
    walk, analyses, _ = analyse_repository(root)
    parse_s = time.perf_counter() - started
    num_chunks = sum(len(a.chunks) for a in analyses)
    report = RepoIndexer(store).index(root, collection=collection)
    out: dict[str, Any] = {
        "root": str(root), "files": report.num_files, "chunks": report.num_chunks,
        "index_s": round(report.seconds, 3), "files_per_s": round(report.num_files / report.seconds, 2),
        "chunks_per_s": round(report.num_chunks / report.seconds, 2),
        "parse_only": {"seconds": round(parse_s, 3), "files_per_s": round(len(walk.files) / parse_s, 1),
                       "chunks_per_s": round(num_chunks / parse_s, 1)},
        "problems": len(report.problems),
    }
    if peer:
        out["peer_plain_text_ingest"] = _plain_ingest(store, walk.files, f"{collection}-plain")
        out["ratio_index_s_vs_plain"] = round(report.seconds / out["peer_plain_text_ingest"]["seconds"], 3)
    return out


def _plain_ingest(store: Any, files: list[Any], collection: str) -> dict[str, Any]:
    """The peer: the same files through the store's own token-aware text chunker (no parsing, no graph)."""
    from ragsvc.types import DocumentInput

    started = time.perf_counter()
    store.create_collection(collection)
    docs = [DocumentInput(text=t, id=f.rel_path) for f in files if (t := f.path.read_text(errors="replace")).strip()]
    for begin in range(0, len(docs), 32):
        store.add_documents(collection, docs[begin : begin + 32])
    seconds = time.perf_counter() - started
    chunks = store.get_collection(collection).num_chunks
    return {"seconds": round(seconds, 3), "files_per_s": round(len(docs) / seconds, 2),
            "chunks": chunks, "chunks_per_s": round(chunks / seconds, 2)}


def reindex_speed(store: Any, root: Path, collection: str, *, repeats: int = 3) -> dict[str, Any]:
    """Re-index with nothing changed, then after appending a function to one file (`repeats` times)."""
    from ragsvc.code.indexer import RepoIndexer

    indexer = RepoIndexer(store)
    unchanged = indexer.index(root, collection=collection)
    target = max(root.rglob("*.py"), key=lambda p: p.stat().st_size)  # the worst case: the largest file
    samples: list[float] = []
    for i in range(repeats):
        with target.open("a", encoding="utf-8") as handle:
            handle.write(f"\n\ndef bench_touched_{i}(value):\n    return value + {i}\n")
        report = indexer.index(root, collection=collection)
        if report.changed_files != [target.relative_to(root).as_posix()]:
            raise RuntimeError(f"re-index parsed {report.changed_files}, expected only {target}")
        samples.append(report.seconds)
    return {"no_change_s": round(unchanged.seconds, 3), "touched_file": target.relative_to(root).as_posix(),
            "touched_file_kb": round(target.stat().st_size / 1024, 1),
            "one_file_changed_s": {"median": round(statistics.median(samples), 3), "samples": samples},
            "goal_s": 2.0}


def map_latency(store: Any, collection: str, *, runs: int = 20) -> dict[str, Any]:
    from ragsvc.code.indexer import RepoIndexer
    from ragsvc.code.repo_map import build_map
    from ragsvc.code.searcher import CollectionSearcher

    started = time.perf_counter()
    graph = RepoIndexer(store).load_graph(collection)
    load_ms = (time.perf_counter() - started) * 1000
    plain, queried = [], []
    build_map(graph, max_tokens=1024)  # warm the cached transition matrix, as a server would be
    for _ in range(runs):
        t = time.perf_counter()
        build_map(graph, max_tokens=1024)
        plain.append((time.perf_counter() - t) * 1000)
    searcher = CollectionSearcher(store, collection)
    for i in range(runs):
        t = time.perf_counter()
        build_map(graph, max_tokens=1024, query=MAP_QUERIES[i % len(MAP_QUERIES)], searcher=searcher)
        queried.append((time.perf_counter() - t) * 1000)
    return {"definitions": len(graph.definitions), "graph_nodes": len(graph.nodes),
            "load_graph_ms": round(load_ms, 2), "map_1024_tokens": _percentiles(plain),
            "map_1024_tokens_with_query": _percentiles(queried)}


def full_parse_map(library_dir: Path, *, runs: int = 10) -> dict[str, Any]:
    """The whole library parsed (no embedding), its graph, and the no-query map latency on it."""
    from ragsvc.code.analysis import analyse_repository
    from ragsvc.code.graph import SymbolGraph
    from ragsvc.code.repo_map import build_map

    started = time.perf_counter()
    walk, analyses, problems = analyse_repository(library_dir)
    parse_s = time.perf_counter() - started
    t = time.perf_counter()
    graph = SymbolGraph([a.tags for a in analyses])
    graph_s = time.perf_counter() - t
    build_map(graph, max_tokens=1024)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        build_map(graph, max_tokens=1024)
        samples.append((time.perf_counter() - t) * 1000)
    chunks = sum(len(a.chunks) for a in analyses)
    return {"root": str(library_dir), "files": len(walk.files), "chunks": chunks, "problems": len(problems),
            "parse_s": round(parse_s, 2), "files_per_s": round(len(walk.files) / parse_s, 1),
            "chunks_per_s": round(chunks / parse_s, 1), "definitions": len(graph.definitions),
            "graph_build_s": round(graph_s, 3), "map_1024_tokens": _percentiles(samples)}


def run_code_bench(
    *,
    cosqa: Path,
    libraries: tuple[str, ...] = DEFAULT_LIBRARIES,
    max_queries: int = 400,
    quality: bool = True,
    speed: bool = True,
    full_parse: bool = True,
    threads: int = 2,
    on_section: Callable[[Mapping[str, Any]], None] | None = None,
) -> CodeBenchResult:
    """Run the code-index benchmarks in a throw-away store; returns the result (config, git sha, sections).
    `on_section` sees each quality task's result and then the speed section as soon as it is done (the whole
    run takes tens of minutes)."""
    from ragsvc.bench.provenance import package_git_sha
    from ragsvc.retrieval.vector_store import VectorStore

    embedder = _embedder(threads)
    git_sha, created_unix, load_avg = package_git_sha(), int(time.time()), os.getloadavg()
    report = on_section or (lambda _section: None)
    sections: list[TaskScores] = []
    speed_section: Mapping[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="ragsvc-bench-code-") as tmp:
        store = VectorStore.open(Path(tmp) / "data", embedder=embedder)
        try:
            for section in _quality_sections(store, cosqa, libraries, max_queries=max_queries) if quality else ():
                sections.append(section)
                report(section.to_json())
            if speed:
                speed_section = _speed_section(store, Path(tmp), full_parse=full_parse)
                report(speed_section)
        finally:
            store.close()
    return CodeBenchResult(git_sha, created_unix, os.cpu_count(), load_avg, embedder.id, threads,
                           {"libraries": list(libraries), "max_queries": max_queries, "subset": DEFAULT_SUBSET},
                           tuple(sections) if quality else None, speed_section)


def _package_dir(name: str) -> Path:
    file = importlib.import_module(name).__file__
    if file is None:  # a namespace package has no __init__.py to locate it by
        raise ValueError(f"package {name!r} has no __file__; benchmark a regular package")
    return Path(file).parent


def _quality_sections(store: Any, cosqa: Path, libraries: tuple[str, ...], *,
                      max_queries: int) -> Iterator[TaskScores]:
    """Yield one result per task: CoSQA, then the docstring task of each library (with its map hit rate)."""
    from ragsvc.bench.code_quality import cosqa_task, docstring_task, evaluate_task, index_task, map_hit_rate

    tasks = [(cosqa_task(cosqa, max_queries=max_queries), "cosqa")]
    for lib in libraries:
        tasks.append((docstring_task(_package_dir(lib), max_queries=max_queries), f"doc-{lib}"))
    for task, name in tasks:
        chunks = index_task(store, task, name)
        scores = evaluate_task(store, task, name)
        # CoSQA's functions do not call each other: no map to rank
        yield scores.with_parts(chunks=chunks, repo_map=map_hit_rate(store, task, name)
                                if name.startswith("doc-") else None)


def _speed_section(store: Any, tmp: Path, *, full_parse: bool) -> dict[str, Any]:
    transformers_dir = _package_dir("transformers")
    subset = copy_subset(transformers_dir, DEFAULT_SUBSET, tmp / "transformers-subset")
    repo_root = Path(__file__).resolve().parents[2]
    speed: dict[str, Any] = {
        "this_repo": index_speed(store, repo_root, "speed-this-repo", peer=False),
        "transformers_subset": {"parts": list(DEFAULT_SUBSET),
                                **index_speed(store, subset, "speed-transformers", peer=True)},
    }
    speed["reindex"] = reindex_speed(store, subset, "speed-transformers")
    speed["map_latency"] = map_latency(store, "speed-transformers")
    speed["map_latency_this_repo"] = map_latency(store, "speed-this-repo")
    if full_parse:
        speed["transformers_full_parse"] = full_parse_map(transformers_dir)
    return speed
