"""Bootstrap intervals, the paired test, compare and the report, on results dicts built by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ragsvc.cli.eval import app
from ragsvc.errors import InvalidInput
from ragsvc.evals.compare import compare_results
from ragsvc.evals.report import write_report
from ragsvc.evals.results import load_results, write_json_atomic
from ragsvc.evals.stats import bootstrap_ci, paired_permutation_test


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(1)
    small, large = rng.random(20), rng.random(2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci(small) == bootstrap_ci(small)  # seeded


def test_paired_permutation_test():
    rng = np.random.default_rng(2)
    a = rng.random(200)
    assert paired_permutation_test(a, a + 0.05) < 0.001  # consistent gain on every query
    noisy = a + rng.normal(0, 0.2, size=200)
    assert paired_permutation_test(a, noisy - (noisy - a).mean()) > 0.5  # zero mean difference
    assert paired_permutation_test(a, a) == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_permutation_test([1.0, 2.0], [1.0])


def _results(shift: float, *, suite: str = "s") -> dict:
    rng = np.random.default_rng(3)
    base = rng.random(50)
    configs = []
    for name, delta in (("exact", 0.0), ("small", -0.1 + shift)):
        values = np.clip(base + delta, 0, 1)
        per_query = {f"q{i}": float(v) for i, v in enumerate(values)}
        configs.append({
            "name": name, "metrics": {"ndcg@10": float(values.mean()), "recall@10": float(values.mean())},
            "metrics_ci": {"ndcg@10": list(bootstrap_ci(values)), "recall@10": list(bootstrap_ci(values))},
            "latency_ms": {"p50": 1.0 + delta, "p95": 2.0}, "build_s": 0.5, "index_bytes": 1000,
            "per_query": {"ndcg@10": per_query, "recall@10": per_query},
        })
    return {"suite": suite, "dataset": "d", "configs": configs, "git_sha": None, "num_queries": 50,
            "baseline": "exact", "references": {"BEIR BM25": 0.665}, "answer": {"skipped": "no generator"}}


def test_report_files_written_and_readable(tmp_path):
    path = tmp_path / "s-1.json"
    write_json_atomic(path, _results(0.0))
    md = write_report(load_results(path), path)
    text = md.read_text()
    assert "| small |" in text and "Δ ndcg@10 vs exact" in text and "BEIR BM25 | 0.665" in text
    assert "Skipped: no generator" in text
    for png in ("s-1-metrics.png", "s-1-tradeoff.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in text
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_report_without_matplotlib_has_no_plots(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    path = tmp_path / "s-2.json"
    write_json_atomic(path, _results(0.0))
    text = write_report(load_results(path), path).read_text()
    assert "| small |" in text and ".png" not in text and not list(tmp_path.glob("*.png"))


def test_compare_paired_deltas_and_cli(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, _results(0.0))
    write_json_atomic(b, _results(0.1))
    rows, unmatched = compare_results(a, b)
    small = next(r for r in rows if r.config == "small" and r.metric == "ndcg@10")
    assert small.delta > 0.09 and small.p_value is not None and small.p_value < 0.01 and small.num_queries == 50
    exact = next(r for r in rows if r.config == "exact" and r.metric == "ndcg@10")
    assert exact.delta == 0.0 and exact.p_value == 1.0
    assert unmatched == []
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "small" in result.output and "ndcg@10" in result.output


def test_compare_rejects_files_that_are_not_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"configs": [{"name": "x"}]}))
    with pytest.raises(InvalidInput, match="lacks metrics"):
        load_results(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"configs": [\n')
    with pytest.raises(InvalidInput, match="broken.json:2: not valid JSON"):
        load_results(broken)
    result = CliRunner().invoke(app, ["compare", str(bad), str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "lacks metrics" in result.output


def test_compare_lists_configs_only_one_file_has_and_works_without_per_query(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    old = _results(0.0)
    for config in old["configs"]:
        del config["per_query"]  # an older file: deltas still come out, without p-values
    new = _results(0.0)
    new["configs"][1]["name"] = "renamed"
    write_json_atomic(a, old)
    write_json_atomic(b, new)
    rows, unmatched = compare_results(a, b)
    assert unmatched == ["renamed", "small"]
    assert {r.config for r in rows} == {"exact"}
    assert all(r.p_value is None and r.delta == 0.0 for r in rows)
