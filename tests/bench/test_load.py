"""`ragsvc bench load`: the report's arithmetic, and a short real run against a `ragsvc serve --sample` child."""

from __future__ import annotations

import json
import os

import pytest

from ragsvc.bench import load
from ragsvc.bench.load import LoadConfig, parse_mix, run_load, server_embedding
from ragsvc.bench.load_report import (
    LoadResult,
    Sample,
    Verification,
    ingest_cpu_allowed,
    ingest_cpu_in_searches,
    phase_stats,
    search_ratio,
    targets,
    to_markdown,
)
from ragsvc.bench.provenance import ISA_FLAGS, cpu_isa


def test_stats_count_errors_by_outcome_and_take_percentiles_of_successes():
    samples = [Sample("search", float(ms), "ok") for ms in range(1, 101)]
    samples += [Sample("search", 5000.0, "503"), Sample("ingest", 40.0, "ok"), Sample("ingest", 1.0, "ReadTimeout")]
    stats = phase_stats("mixed", samples, duration_s=10.0)
    search = stats.ops["search"]
    assert (search.count, search.ok, search.throughput_per_s) == (101, 100, 10.0)
    assert search.p50_ms == 50.5 and search.p99_ms == pytest.approx(99.01) and search.max_ms == 100.0
    assert search.errors == {"503": 1} and stats.ops["ingest"].errors == {"ReadTimeout": 1}
    assert stats.errors == 2


def test_the_server_s_own_times_split_a_latency_into_inside_and_outside_the_server():
    samples = [Sample("search", 100.0 + i, "ok", server_ms=60.0 + i, embed_ms=50.0) for i in range(100)]
    samples += [Sample("search", 9000.0, "503", server_ms=1.0), Sample("ingest", 300.0, "ok", server_ms=200.0),
                Sample("delete", 20.0, "ok")]
    stats = phase_stats("mixed", samples, duration_s=10.0)
    assert stats.ops["search"].parts == {"server": {"p50_ms": 109.5, "p99_ms": pytest.approx(158.01)},
                                         "embed": {"p50_ms": 50.0, "p99_ms": 50.0},
                                         "outside": {"p50_ms": 40.0, "p99_ms": 40.0}}, "failures are left out"
    assert stats.ops["ingest"].parts == {"server": {"p50_ms": 200.0, "p99_ms": 200.0},
                                         "outside": {"p50_ms": 100.0, "p99_ms": 100.0}}
    assert stats.ops["delete"].parts == {}, "an answer without timings has no parts"
    result = LoadResult({"clients": 1, "duration_s": 10.0, "mix": {}}, {}, [stats], Verification(1, 0, 1, 0),
                             None, [])
    text = to_markdown(result)
    assert "- mixed search: at the client 149.5 / 198.01, in the server 109.5 / 158.01 (embedding 50 / 50), " \
           "outside it 40 / 40" in text
    assert "- mixed ingest: at the client 300 / 300, in the server 200 / 200, outside it 100 / 100" in text
    assert "mixed delete" not in text
    assert result.to_json()["phases"]["mixed"]["ops"]["search"]["parts"]["outside"] == {"p50_ms": 40.0,
                                                                                        "p99_ms": 40.0}


def test_ratio_and_targets():
    only = phase_stats("search_only", [Sample("search", 10.0, "ok")] * 100, 10.0)
    mixed = phase_stats("mixed", [Sample("search", 300.0, "ok")] * 60 + [Sample("ingest", 20.0, "ok")] * 5, 10.0)
    ratio = search_ratio([only, mixed])
    assert ratio == 0.6
    met = {t.name: t.met for t in targets([only, mixed], Verification(5, 0, 5, 0), ratio)}
    assert met == {"0 errors in every phase": True, "0 acknowledged documents lost": True,
                   "search p99 <= 250 ms under the mix": False,
                   "search throughput under the mix >= 0.7x search-only": False}


def test_server_cpu_gives_the_cost_of_an_ingest_in_searches():
    only = phase_stats("search_only", [Sample("search", 10.0, "ok")] * 100, 10.0, server_cpu_s=2.0)  # 20 ms each
    mixed = phase_stats("mixed", [Sample("search", 9.0, "ok")] * 40 + [Sample("ingest", 9.0, "ok")] * 10, 10.0,
                        server_cpu_s=1.6)  # 40 x 20 ms + 10 ingests x 80 ms
    assert only.server_cpu_ms_per_op == 20.0 and mixed.server_cpu_ms_per_op == 32.0
    assert ingest_cpu_in_searches([only, mixed]) == 4.0
    assert ingest_cpu_in_searches([phase_stats("search_only", [], 1.0), mixed]) is None
    # 0.16 cores busy under the mix against 0.2 alone, a quarter of an ingest a search: the mix reaches 0.7x
    # search-only's throughput only if an ingest costs at most (0.16 / (0.7 x 0.2) - 1) / 0.25 searches
    assert ingest_cpu_allowed([only, mixed]) == 0.57
    equal = phase_stats("mixed", [Sample("search", 9.0, "ok")] * 40 + [Sample("ingest", 9.0, "ok")] * 10, 10.0,
                        server_cpu_s=2.0)
    assert ingest_cpu_allowed([only, equal]) == 1.71  # 80/20 on equal cores
    assert ingest_cpu_allowed([phase_stats("search_only", [], 1.0), mixed]) is None
    assert phase_stats("mixed", [], 1.0).server_cpu_ms_per_op is None


def test_the_driver_and_idle_cpu_account_for_the_machine():
    phase = phase_stats("search_only", [Sample("search", 10.0, "ok")] * 100, 10.0, server_cpu_s=12.5,
                        driver_cpu_s=2.0, idle_cpu_s=5.5)
    assert phase.driver_cpu_ms_per_op == 20.0
    assert (phase.cores(phase.server_cpu_s), phase.cores(phase.driver_cpu_s), phase.cores(phase.idle_cpu_s)) == (
        1.25, 0.2, 0.55)
    assert phase.cores(None) is None
    stolen = phase_stats("mixed", [Sample("search", 10.0, "ok")] * 10, 10.0, server_cpu_s=12.5, driver_cpu_s=2.0,
                         idle_cpu_s=1.0, other_cpu_s=0.5, steal_cpu_s=4.0)
    assert stolen.cores(stolen.steal_cpu_s) == 0.4


def test_the_report_names_the_hosts_steal_only_where_there_was_some():
    from ragsvc.bench.load_report import LoadResult, Verification, to_markdown

    def result(steal: float) -> LoadResult:
        phase = phase_stats("mixed", [Sample("search", 10.0, "ok")] * 10, 10.0, server_cpu_s=12.5,
                            driver_cpu_s=2.0, idle_cpu_s=1.0, other_cpu_s=0.5, steal_cpu_s=steal)
        config = {"clients": 2, "duration_s": 10.0, "mix": {"search": 1.0}}
        return LoadResult(config=config, provenance={}, phases=[phase], verification=Verification(0, 0, 0, 0),
                          search_throughput_ratio=None, targets=[])

    assert "steal) 0.4" in to_markdown(result(4.0)) and result(4.0).to_json()["phases"]["mixed"]["cores"][
        "steal"] == 0.4
    assert "steal" not in to_markdown(result(0.0))
    # a run with no search-only phase (--no-search-only-first) says why it has no ratio, not "None"
    lone = to_markdown(result(0.0))
    assert "search-only: None" not in lone and "mix / search-only: n/a (no search-only phase)" in lone
    assert "what one ingest costs in searches needs a search-only phase" in lone


def test_bad_mixes_are_refused():
    assert parse_mix("search=0.8, ingest=0.2") == {"search": 0.8, "ingest": 0.2}
    for text in ("search", "search=x"):
        with pytest.raises(ValueError, match="name=weight"):
            parse_mix(text)
    with pytest.raises(ValueError, match="must give non-negative weights"):
        LoadConfig(mix={"upload": 1.0})
    with pytest.raises(ValueError, match="warmup_s"):
        LoadConfig(warmup_s=-1.0)
    for rounds, duration in ((0, 60.0), (61, 60.0), (4, 1.0)):
        with pytest.raises(ValueError, match="rounds must be in 1..60 with slices of at least 0.5 s"):
            LoadConfig(rounds=rounds, duration_s=duration)


@pytest.mark.slow
def test_a_short_run_against_a_real_server_loses_nothing(tmp_path, monkeypatch):
    landed: list[str] = []  # a commit lands once the first phase is under way
    monkeypatch.setattr(load, "package_git_sha", lambda: ("1" if landed else "0") * 40)
    config = LoadConfig(clients=3, duration_s=2.0, mix={"search": 0.5, "ingest": 0.3, "delete": 0.2}, warmup_s=0.5,
                        rounds=2)
    announced: list[str] = []
    result = run_load(config, data_dir=tmp_path / "data", on_phase=lambda name: (announced.append(name),
                                                                             landed.append(name)))
    out = result.to_json()
    assert announced == ["search_only warm-up", "search_only (1 of 2)", "mixed warm-up", "mixed (1 of 2)",
                         "search_only (2 of 2)", "mixed (2 of 2)"], "the phases take turns, warmed up once"
    assert set(out["phases"]) == {"search_only", "mixed"}, "warm-up phases are not reported"
    assert all(2.0 <= p["duration_s"] < 4.0 for p in out["phases"].values()), "two 1 s slices pooled per phase"
    assert "2 alternating slices after 0.5 s of uncounted warm-up" in to_markdown(result)
    assert set(out["phases"]["mixed"]["ops"]) >= {"search", "ingest"}
    assert all(p["errors"] == 0 for p in out["phases"].values()), out["phases"]
    v = out["verification"]
    assert v["acknowledged"] > 0 and v["lost"] == 0 and v["index_missing"] == 0
    assert v["index_checked"] == min(50, v["acknowledged"])
    assert out["git_sha"] == "0" * 40 and out["cpu"] and json.dumps(out)  # the code the run started on
    assert out["cpu_isa"].split() == cpu_isa() and set(cpu_isa()) <= set(ISA_FLAGS)  # flags beside the model name
    assert "| mixed | search |" in to_markdown(result)
    for op in ("search", "ingest"):  # the server's own times, as its answers report them
        parts = out["phases"]["mixed"]["ops"][op]["parts"]
        assert 0 < parts["server"]["p50_ms"] <= out["phases"]["mixed"]["ops"][op]["p99_ms"], parts
        assert parts["outside"]["p50_ms"] > 0, parts
    assert "embed" in out["phases"]["mixed"]["ops"]["search"]["parts"] and "in the server" in to_markdown(result)
    assert all(p["server_cpu_s"] > 0 for p in out["phases"].values()), "the server's CPU is read from /proc"
    assert all(p["driver_cpu_s"] > 0 and p["idle_cpu_s"] >= 0 and p["other_cpu_s"] >= 0
               for p in out["phases"].values()), out["phases"]
    assert out["server_embed_lanes"] and "Cores in use" in to_markdown(result)


def test_the_result_says_how_the_server_runs_its_embedding_model(monkeypatch):
    monkeypatch.delenv("RAGSVC_API__EMBED_THREADS", raising=False)
    monkeypatch.setenv("RAGSVC_API__EMBED_LANES", "2")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert server_embedding(None) == {"server_cores": "4", "server_embed_lanes": "2",
                                      "server_embed_threads_per_lane": "2"}
    one = server_embedding({"RAGSVC_API__EMBED_LANES": "1"})
    assert one["server_embed_lanes"] == "1" and one["server_embed_threads_per_lane"] == "torch's choice"
