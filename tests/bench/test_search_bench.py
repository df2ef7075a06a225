"""The search benchmark at tiny sizes: real MiniLM vectors of real passages, the JSON shape, sane recall values.

Speed is never asserted here (that is what the benchmark reports); these check that what it reports is
computed right: the exact oracle, recall arithmetic, target evaluation, and a full smoke run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ragsvc.bench.configs import default_configs, select_configs
from ragsvc.bench.search import run_search_bench
from ragsvc.bench.search_records import HttpComparison, SearchBenchResult, SearchRow, TimedPoint
from ragsvc.bench.targets import evaluate_targets, with_ratios
from ragsvc.bench.timing import Measurement, exact_topk, recall_at_k
from ragsvc.cli import app


def test_exact_topk_matches_full_sort():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(exact_topk(vectors, queries, 10, block=3), expected)


def test_recall_counts_overlap_and_short_rows():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = [np.array([4, 3, 9, 1]), np.array([5])]  # 3 of 4, then 1 of 4 (a short, padded-away row)
    assert recall_at_k(found, truth) == pytest.approx(4 / 8)


def test_select_configs_by_prefix_and_unknown_name():
    names = [c.name for c in select_configs(default_configs(), "adaptive")]
    assert names == ["adaptive-tail-sq8-d256", "adaptive-tail-sq8-d256-m12", "adaptive-tail-sq8-d192",
                     "adaptive-d192", "adaptive-d128"]
    with pytest.raises(ValueError, match="matches no config"):
        select_configs(default_configs(), "annoy")


def _measured(recall, qps):
    return Measurement(recall_at_10=recall, qps=qps, mean_latency_ms=1000 / qps, p99_latency_ms=2000 / qps,
                       qps_all_passes=[qps])


def _row(name, recall, qps, nbytes):
    return SearchRow(name, _measured(recall, qps), nbytes, params={})


def test_targets_pass_and_fail_on_the_right_side_of_each_threshold():
    peers = [_row("hnswlib-M16-ef16", 0.90, 9000, 900), _row("hnswlib-M16-ef32", 0.96, 5000, 900),
             _row("hnswlib-M16-ef64", 0.99, 3000, 900)]
    rows = [_row("adaptive-d128-s100", 0.97, 5200, 299), _row("adaptive-d128-4shards-s100", 0.966, 4000, 299),
            _row("hnsw-full", 0.99, 4000, 1000), _row("hnsw-full-4shards", 0.984, 3000, 1000)]
    http = HttpComparison(10, {}, 0.1, in_process=TimedPoint("in", _measured(1.0, 100)),
                          http=TimedPoint("http", _measured(1.0, 49)))
    assert http.http_over_in_process == 0.49
    reference, rows, _ = with_ratios(rows, peers)
    assert reference.name == "hnswlib-M16-ef32"  # fastest point at recall >= 0.95
    assert rows[0].qps_vs_hnswlib == pytest.approx(1.04)
    results = {t.name: t.passed for t in evaluate_targets(rows, reference, http)}
    assert results == {
        "adaptive >= 1.0x hnswlib QPS at <= 1/3 memory, recall@10 >= 0.95": True,
        "4 shards within 0.5 pt of 1 shard (adaptive-d128-4shards-s100)": True,
        "4 shards within 0.5 pt of 1 shard (hnsw-full-4shards)": False,
        "HTTP >= 0.5x in-process QPS": False,
    }


def test_cli_rejects_unknown_config_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["bench", "search", "--configs", "annoy", "--cache-dir", str(tmp_path),
                                      "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 2
    assert "matches no config" in result.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_smoke_run_tiny(tmp_path):
    from ragsvc.bench.corpus import default_data_dir
    from ragsvc.config import Settings

    data_dir = Settings().eval.data_root or default_data_dir()
    if not data_dir.is_dir():  # held-out queries come from the shared evaluation sets
        pytest.skip(f"shared datasets not found at {data_dir} (set RAGSVC_EVAL__DATA_ROOT)")
    record = run_search_bench(num_vectors=400, num_queries=24, configs="hnsw-full,adaptive-d128",
                              cache_dir=tmp_path, data_dir=data_dir, hnsw_ef_sweep=(10, 64), http=True,
                              http_vectors=300)
    result = json.loads(json.dumps(record.to_json()))
    assert SearchBenchResult.from_json(result) == record  # the file edge loses nothing
    assert list(result) == ["benchmark", "git_sha", "created_unix", "k", "machine", "corpus", "memory_note", "notes",
                            "configs", "peers", "reference_hnswlib", "gpu", "http", "targets", "wall_s"]
    assert list(result["configs"][0]) == ["name", "recall_at_10", "qps", "mean_latency_ms", "p99_latency_ms",
                                          "qps_all_passes", "index_bytes", "open_or_build_s", "served_by", "params",
                                          "qps_vs_hnswlib", "bytes_vs_hnswlib"]
    assert len(result["git_sha"]) in (40, len("unknown"))
    assert result["corpus"]["num_vectors"] == 400 and result["corpus"]["random_padding"] == 0
    for row in result["configs"] + result["peers"]:
        assert {"name", "recall_at_10", "qps", "index_bytes"} <= set(row)
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["qps"] > 0
        assert row["index_bytes"] >= 400 * 64  # at least a 64-d int8 copy of every vector
    peers = {p["name"]: p for p in result["peers"]}
    assert peers["faiss-flat"]["recall_at_10"] >= 0.99  # exact search against the exact answer
    assert peers["hnswlib-M16-ef64"]["recall_at_10"] >= 0.95
    assert peers["hnswlib-M16-ef64"]["index_bytes"] >= 400 * 384 * 4  # hnswlib keeps float32 vectors
    configs = {c["name"]: c for c in result["configs"]}
    assert configs["hnsw-full"]["recall_at_10"] >= 0.95
    assert configs["adaptive-d128-s400"]["recall_at_10"] >= 0.99  # shortlist covers the whole collection
    http = result["http"]
    assert http["http"]["recall_at_10"] == http["in_process"]["recall_at_10"] >= 0.9
    assert http["http_over_in_process"] > 0
    assert {t["name"] for t in result["targets"]} >= {"HTTP >= 0.5x in-process QPS"}
    assert result["gpu"]["skipped"]
