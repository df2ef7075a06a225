"""The serving benchmark: workload and metric arithmetic (pure), and a smoke run of every system at tiny sizes.
Speed itself is never asserted here; the benchmark reports it."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from ragsvc.bench.serving import ServingBenchConfig, run_serving_bench
from ragsvc.bench.serving_run import with_other_cpu
from ragsvc.bench.serving_workload import RequestTiming, RunSummary, ServingBenchResult, make_workload, summarise

MODEL_CACHE = Path(tempfile.gettempdir()) / "ragsvc-test-models"  # shared with the serving tests


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ragsvc.serving.loader import resolve_model_dir

    return AutoTokenizer.from_pretrained(resolve_model_dir("smollm2", cache_dir=str(MODEL_CACHE)))


def test_workload_is_seeded_and_exact(tokenizer):
    a = make_workload(tokenizer, num_requests=5, prompt_tokens=(30, 60), output_tokens=(4, 9), seed=3)
    b = make_workload(tokenizer, num_requests=5, prompt_tokens=(30, 60), output_tokens=(4, 9), seed=3)
    assert a == b
    special = set(tokenizer.all_special_ids)
    for req in a:
        assert 30 <= len(req.prompt_ids) <= 60 and 4 <= req.max_tokens <= 9
        assert not special & set(req.prompt_ids)
        # the ids are what the tokenizer itself produces for their text (llama.cpp gets the same prompt)
        text = tokenizer.decode(req.prompt_ids)
        assert tokenizer(text, add_special_tokens=False)["input_ids"][: len(req.prompt_ids) - 1] == req.prompt_ids[:-1]


def test_summary_arithmetic():
    timings = [RequestTiming(start=0.0, first_token=0.1, end=1.1, num_output_tokens=11),
               RequestTiming(start=0.5, first_token=0.8, end=2.0, num_output_tokens=5)]
    s = summarise("x", "float32", 2, timings)
    assert s.tok_per_s == pytest.approx(16 / 2.0)
    assert s.ttft_p50_ms == pytest.approx(200.0)  # median of 100 ms and 300 ms
    assert s.tpot_p50_ms == pytest.approx((100.0 + 300.0) / 2)  # 1.0 s / 10 and 1.2 s / 4


def test_other_processes_cpu_is_counted_and_this_ones_is_not():
    """A child process's CPU during a run counts as another process's; the run's own work does not."""
    import resource
    import subprocess
    import sys

    def child_burns() -> list[RequestTiming]:
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(4_000_000))"], check=True)
        return []

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, other, steal = with_other_cpu(child_burns)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert child > 0.05 and other >= 0.8 * child - 0.05 - steal  # clock ticks are 10 ms
    assert steal >= 0.0
    old = {"system": "x", "dtype": "bfloat16", "concurrency": 1, "tok_per_s": 1.0, "ttft_p50_ms": 1.0,
           "ttft_p99_ms": 1.0, "tpot_p50_ms": 1.0, "tpot_p99_ms": 1.0, "num_requests": 1}
    assert RunSummary.from_json(old).other_cpu_s is None  # results from before it was kept still read
    assert RunSummary.from_json(old).steal_cpu_s is None


def test_the_hosts_steal_is_told_apart_from_other_processes(monkeypatch):
    """A virtual machine's host taking CPU shows as steal, not as other processes' CPU."""
    from ragsvc.bench import serving_run

    readings = iter([(10.0, 100.0, 5.0), (10.0 + 2.0, 100.0 + 1.0, 5.0 + 3.0)])  # own, idle, steal
    current = {}

    def tick() -> None:
        current["own"], current["idle"], current["steal"] = next(readings)

    monkeypatch.setattr(serving_run, "process_cpu_s", lambda pid: current["own"])
    monkeypatch.setattr(serving_run, "machine_idle_s", lambda: current["idle"])
    monkeypatch.setattr(serving_run, "machine_steal_s", lambda: current["steal"])
    clock = iter([1000.0, 1004.0])  # 4 s of wall time on every core
    monkeypatch.setattr(serving_run.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(serving_run.os, "cpu_count", lambda: 2)
    tick()
    _, other, steal = with_other_cpu(lambda: tick() or [])
    assert steal == 3.0 and other == 2 * 4.0 - 2.0 - 1.0 - 3.0  # the rest of the 8 core-seconds: 2.0


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="unknown systems"):
        ServingBenchConfig(systems=("vllm",))
    with pytest.raises(ValueError, match="concurrency"):
        ServingBenchConfig(concurrency=(0,))
    with pytest.raises(ValueError, match="omp_wait"):
        ServingBenchConfig(omp_wait="active")
    with pytest.raises(ValueError, match="device 'tpu': choose auto, cpu or cuda"):
        ServingBenchConfig(device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_gpu_asked_for_without_one_is_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from ragsvc.cli import app

    out = tmp_path / "serving.json"
    result = CliRunner().invoke(app, ["bench", "serving", "--device", "cuda", "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert "torch sees no CUDA GPU" in result.output and not out.exists()


def test_wait_policy_is_set_in_the_environment(monkeypatch):
    from ragsvc.cli.bench import set_wait_policy

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the ragsvc CLI exports before any command runs
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    set_wait_policy("spin")
    assert os.environ.get("GOMP_SPINCOUNT") == "30000" and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    set_wait_policy("passive")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.slow
def test_smoke_run_every_system(tmp_path, monkeypatch):
    from ragsvc.bench import serving_run

    calls = itertools.count()  # each call a new sha, as if commits landed while the run went on
    monkeypatch.setattr(serving_run, "package_git_sha", lambda: f"{next(calls):040d}")
    threads = torch.get_num_threads()
    cfg = ServingBenchConfig(concurrency=(1, 2), num_requests=2, prompt_tokens=(20, 40), output_tokens=(3, 5),
                             hf_sequential_requests=1, threads=1, prefix_tokens=64, prefix_trials=1,
                             kv_cache_bytes=16 << 20, log_dir=str(tmp_path),
                             cache_dir=str(MODEL_CACHE))
    try:
        reports: list = []
        record = run_serving_bench(cfg, on_progress=reports.append)
    finally:
        torch.set_num_threads(threads)
    result = json.loads(json.dumps(record.to_json()))
    again = json.loads(json.dumps(ServingBenchResult.from_json(result).to_json()))
    assert again == result  # the file edge loses nothing
    # ... but the machine's folders: no temp or home folder is recorded, a repository folder relatively
    assert str(tmp_path) not in json.dumps(result) and str(Path.home()) not in json.dumps(result)
    assert result["config"]["log_dir"] == f"<outside the repository>/{tmp_path.name}"
    assert result["config"]["model"] == cfg.model and result["runs"] == record.to_json()["runs"]
    # a report after every system/level, each marked incomplete; the final result is not
    assert [len(r.runs) for r in reports] == list(range(1, len(record.runs) + 1))
    assert all("incomplete" in r.notes["run"] for r in reports) and "run" not in record.notes
    assert result["ratios_by_concurrency"]["2"]["ragsvc_vs_hf_batch"] > 0
    runs = {(r["system"], r["concurrency"]): r for r in result["runs"]}
    assert {("ragsvc", 1), ("ragsvc", 2), ("hf_sequential", 1), ("hf_batch", 2)} <= set(runs)
    for run in result["runs"]:
        assert set(run) >= {"system", "dtype", "concurrency", "tok_per_s", "ttft_p50_ms", "ttft_p99_ms",
                            "tpot_p50_ms", "tpot_p99_ms"}
        assert run["tok_per_s"] > 0 and 0 < run["ttft_p50_ms"] <= run["ttft_p99_ms"]
    assert runs[("ragsvc", 1)]["dtype"] == runs[("hf_batch", 2)]["dtype"]  # like with like
    assert 0.0 <= result["kv_waste_pct"] < 100.0
    assert result["prefix_ttft_ms"]["cold"] > 0 and result["prefix_ttft_ms"]["warm"] > 0
    assert result["git_sha"] == "0" * 40 and all(r.git_sha == "0" * 40 for r in reports)  # the code it started on
    assert result["omp_env"]["OMP_WAIT_POLICY"] == "PASSIVE"  # the default, recorded with the numbers
    assert result["config"]["device"] == "auto" and ("gpu" in result["cpu"]) == torch.cuda.is_available()
    assert all(r["other_cpu_s"] >= 0 and r["steal_cpu_s"] >= 0 for r in result["runs"] if r["system"] != "llama_cpp")
    if ("llama_cpp", 2) not in runs:  # no llama-server here: the reason is recorded, the rest still ran
        assert "llama_cpp" in result["notes"]


def test_arrival_offsets_are_seeded_poisson_gaps():
    from ragsvc.bench.serving_arrivals import arrival_offsets

    assert arrival_offsets(3, None, seed=0) == [0.0, 0.0, 0.0]  # closed loop: all there at the start
    a, b = arrival_offsets(2000, 4.0, seed=1), arrival_offsets(2000, 4.0, seed=1)
    assert a == b and a[0] == 0.0 and a != arrival_offsets(2000, 4.0, seed=2)
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert min(gaps) >= 0.0
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.1)  # mean gap 1 / rate
    with pytest.raises(ValueError, match="positive"):
        arrival_offsets(3, 0.0, seed=0)


def test_requests_per_level_never_fewer_than_the_level():
    cfg = ServingBenchConfig(concurrency=(1, 8, 32), num_requests=8)
    assert [cfg.requests_at(c) for c in cfg.concurrency] == [8, 8, 32]
    assert ServingBenchConfig().requests_at(32) == 64
    with pytest.raises(ValueError, match="arrival_rate"):
        ServingBenchConfig(arrival_rate=0.0)


def test_open_loop_driver_starts_each_clock_at_its_arrival_and_caps_in_flight():
    """The llama.cpp driver with a stand-in for the HTTP call (it records what the driver hands it)."""
    import asyncio

    from ragsvc.bench.serving_peers import drive
    from ragsvc.bench.serving_workload import BenchRequest

    in_flight, peak, starts = 0, 0, []

    async def one(req, start):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        starts.append((req.max_tokens, start))
        await asyncio.sleep(0)
        in_flight -= 1
        return RequestTiming(start=start, first_token=start, end=start, num_output_tokens=req.max_tokens)

    reqs = [BenchRequest([1, 2], max_tokens=i + 1) for i in range(6)]
    offsets = [0.0, 0.0, 0.0, 0.001, 0.002, 0.002]
    timings = asyncio.run(drive(2, reqs, one, offsets))
    assert peak <= 2 and len(timings) == 6
    t0 = dict(starts)[1]
    assert [round(dict(starts)[i + 1] - t0, 6) for i in range(6)] == offsets  # clocks start at arrival


@pytest.mark.slow
def test_open_loop_ragsvc_run_and_progress_reports(tmp_path):
    from ragsvc.bench.serving_run import run_ragsvc
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine

    engine = LLMEngine.from_config(EngineConfig(cache_dir=str(MODEL_CACHE), kv_cache_bytes=16 << 20))
    reqs = make_workload(engine.tokenizer, num_requests=3, prompt_tokens=(10, 20), output_tokens=(2, 3), seed=0)
    offsets = [0.0, 0.05, 0.1]
    timings = run_ragsvc(engine, reqs, concurrency=1, arrivals=offsets)
    starts = sorted(t.start for t in timings)
    assert [round(s - starts[0], 6) for s in starts] == offsets
    assert all(t.first_token is not None and t.first_token >= t.start for t in timings)
    assert sorted(t.num_output_tokens for t in timings) == sorted(r.max_tokens for r in reqs)


def test_llama_build_info_says_what_the_cpu_backend_was_compiled_with(tmp_path) -> None:
    """A build tree as cmake leaves it: the cache's switches, and the flags ggml-cpu really got (GGML_NATIVE makes
    the GGML_AVX512* switches read OFF although -march=native enables AVX-512)."""
    import stat

    from ragsvc.bench.serving_peers import cpu_backend_flags, llama_build_info

    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho 'version: 1 (abc123)'\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "CMakeCache.txt").write_text("GGML_NATIVE:BOOL=ON\nGGML_AVX512:BOOL=OFF\nOTHER:BOOL=ON\n")
    assert cpu_backend_flags(tmp_path) == ""  # no flags.make: nothing claimed
    flags = tmp_path / "ggml" / "src" / "CMakeFiles" / "ggml-cpu.dir" / "flags.make"
    flags.parent.mkdir(parents=True)
    flags.write_text("# generated\nC_FLAGS = -O3 -DNDEBUG -Wall -march=native -fopenmp -std=gnu11\nC_DEFINES = -DX\n")
    info = llama_build_info(str(binary))
    assert info.startswith("version: 1 (abc123)")
    assert "cmake: GGML_NATIVE:BOOL=ON, GGML_AVX512:BOOL=OFF" in info and "OTHER" not in info
    assert info.endswith("ggml-cpu compiled with -O3 -march=native -fopenmp")
    flags.unlink()  # a Ninja build tree has a build.ninja instead, with each object's FLAGS
    (tmp_path / "build.ninja").write_text(
        "build ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o: C_COMPILER__ggml-base_Release ggml.c\n  FLAGS = -O2\n"
        "build ggml/src/CMakeFiles/ggml-cpu.dir/ggml-cpu/ggml-cpu.c.o: C_COMPILER__ggml-cpu_Release ggml-cpu.c\n"
        "  DEFINES = -DX\n  FLAGS = -mno-amx-tile -O3 -Wall -march=native -fopenmp\n  INCLUDES = -I.\n")
    assert cpu_backend_flags(tmp_path) == "-mno-amx-tile -O3 -march=native -fopenmp"
