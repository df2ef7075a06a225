"""bench code's records: a docstring task scored for real (MiniLM, a real store) keeps the JSON shape the
benchmark has always written, and reads back through `from_json` unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragsvc.bench.code import CodeBenchResult
from ragsvc.bench.code_quality import docstring_task, evaluate_task, index_task, map_hit_rate

BENCH_DIR = Path(__file__).resolve().parents[2] / "ragsvc" / "bench"


@pytest.mark.slow
def test_task_scores_keep_their_json_shape(tmp_path, minilm):
    from ragsvc.retrieval.vector_store import VectorStore

    package = tmp_path / "pkg"
    package.mkdir()
    for name in ("timing.py", "targets.py"):  # small modules whose functions have docstrings
        shutil.copy(BENCH_DIR / name, package / name)
    task = docstring_task(package, max_queries=6)
    store = VectorStore.open(tmp_path / "data", embedder=minilm)
    try:
        chunks = index_task(store, task, "doc-pkg")
        scores = evaluate_task(store, task, "doc-pkg").with_parts(
            chunks=chunks, repo_map=map_hit_rate(store, task, "doc-pkg"))
    finally:
        store.close()
    section = scores.to_json()
    assert list(section) == ["task", "num_queries", "num_files", "num_definitions", "candidates", "results",
                             "chunks", "repo_map"]
    assert section["num_queries"] == len(task.queries) > 0 and section["chunks"] == chunks > 0
    assert set(section["results"]) == {"dense", "dense+graph@0.05", "dense+graph@0.1", "dense+graph@0.2", "bm25"}
    assert all(0.0 <= r["recall@10"] <= 1.0 for r in section["results"].values())
    assert list(section["repo_map"]) == ["max_tokens", "mean_definitions_shown", "hit_rate_no_query",
                                         "hit_rate_query_aware", "hit_rate_dense_top_n"]
    result = CodeBenchResult("sha", 1, 2, (0.5, 0.5, 0.5), "minilm", 1, {"libraries": ["pkg"]}, (scores,), None)
    data = json.loads(json.dumps(result.to_json()))
    assert list(data) == ["benchmark", "git_sha", "created_unix", "cpu_count", "load_avg_at_start", "embedder",
                          "torch_threads", "config", "quality"]  # no speed section: it was not run
    assert CodeBenchResult.from_json(data).to_json() == data
