"""Eval records at the file edge: every committed results baseline reads into a RunResult and writes back the
same bytes; malformed files fail with the file and config named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.evals.records import ConfigResult, LatencySummary, MetricSummary, RunResult
from ragsvc.evals.results import load_results, write_json_atomic

BASELINES = Path(__file__).resolve().parents[2] / "eval" / "baselines"


def _results_files() -> list[Path]:
    files = [p for p in sorted(BASELINES.glob("*.json")) if "configs" in json.loads(p.read_text())]
    assert files, "no eval results baseline found"
    return files


@pytest.mark.parametrize("path", _results_files(), ids=lambda p: p.name)
def test_committed_baseline_round_trips_byte_for_byte(path, tmp_path):
    result = load_results(path)
    assert result.configs and all(c.metrics for c in result.configs)
    copy = tmp_path / path.name
    write_json_atomic(copy, result.to_json())
    assert copy.read_text() == path.read_text()


def test_a_config_keeps_mean_interval_and_per_query_together():
    config = ConfigResult(name="exact", metrics={"ndcg@10": MetricSummary(0.5, (0.4, 0.6), {"q1": 0.0, "q2": 1.0}),
                                                 "mrr@10": MetricSummary(0.25, (0.1, 0.4), {"q1": 0.5, "q2": 0.0})},
                          latency_ms=LatencySummary(1.0, 2.0, 1.5), build_s=0.1, index_bytes=10, kind="index",
                          params={"backend": "exact"}, num_queries=2, served_by={"exact": 2})
    data = config.to_json()
    assert list(data) == ["name", "kind", "params", "metrics", "metrics_ci", "latency_ms", "build_s", "index_bytes",
                          "num_queries", "served_by", "per_query"]  # no prefetch_s or stages: none recorded
    assert data["metrics"] == {"ndcg@10": 0.5, "mrr@10": 0.25} and data["metrics_ci"]["mrr@10"] == [0.1, 0.4]
    assert ConfigResult.from_json(json.loads(json.dumps(data)), where="x") == config


def test_absent_optional_keys_stay_absent_and_nulls_stay_null():
    data = {"suite": "s", "dataset": "d", "configs": [], "git_sha": None, "num_queries": 3, "answer": None}
    result = RunResult.from_json(data, source="f.json")
    assert result.git_sha is None and "git_sha" not in result.absent and "llm" in result.absent
    assert result.to_json() == data
    assert list(RunResult(suite="s", dataset="d", configs=()).to_json())[-1] == "answer"


@pytest.mark.parametrize(("config", "message"), [
    ({"name": "x", "metrics": {}}, r"f.json: configs\[0\] lacks latency_ms, build_s, index_bytes"),
    ({"name": "x", "metrics": [], "latency_ms": {"p50": 1, "p95": 2}, "build_s": 0, "index_bytes": 0},
     r"configs\[0\].metrics: expected a JSON object, got list"),
    ({"name": "x", "metrics": {"m": 1}, "metrics_ci": {"m": [1]}, "latency_ms": {"p50": 1, "p95": 2},
      "build_s": 0, "index_bytes": 0}, r"metrics_ci.m: expected \[low, high\]"),
    ({"name": "x", "metrics": {}, "latency_ms": {"p50": 1}, "build_s": 0, "index_bytes": 0},
     r"latency_ms needs p50 and p95"),
])
def test_malformed_configs_name_the_file_and_config(config, message):
    with pytest.raises(InvalidInput, match=message):
        RunResult.from_json({"configs": [config]}, source="f.json")
