"""`ragsvc bench quant-kernels` on the CPU, kept small: every shape and format timed, the ratios its own."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ragsvc.bench.quant_kernels import SHAPES, run_kernel_bench
from ragsvc.cli import app


def test_every_linear_and_format_is_timed_on_the_cpu():
    result = run_kernel_bench(model="smollm2", tokens=(1, 3), device="cpu", reps=2, cache_bytes=1 << 20)
    doc = json.loads(json.dumps(result.to_json()))
    linears = SHAPES["smollm2"]["linears"]
    assert doc["device"] == "cpu" and doc["device_name"]
    assert [(c["linear"], c["tokens"]) for c in doc["cases"]] == [(n, t) for t in (1, 3) for n in linears]
    for case in doc["cases"]:
        assert (case["in_features"], case["out_features"]) == linears[case["linear"]]
        assert set(case["us"]) == {"bf16", "int8", "q4"} and min(case["us"].values()) > 0
        for fmt in ("int8", "q4"):
            ratio = case["us"]["bf16"] / case["us"][fmt]  # the reported ratio is rounded to 2 decimals
            assert case["speedup_vs_bf16"][fmt] == pytest.approx(ratio, rel=0.01, abs=0.006)
    for t in ("1", "3"):  # a step: every layer's linears
        per_layer = sum(c["us"]["q4"] for c in doc["cases"] if c["tokens"] == int(t))
        assert doc["step_us"][t]["q4"] == pytest.approx(per_layer * SHAPES["smollm2"]["layers"], rel=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="llama-70b"), "model 'llama-70b'"),
    (dict(tokens=(0,)), "tokens must be whole numbers from 1 to 4096"),
    (dict(reps=0), "reps must be from 1 to 100000"),
    (dict(device="tpu"), "device 'tpu'"),
])
def test_bad_settings_are_refused(kwargs, message):
    settings = dict(model="smollm2", tokens=(1,), device="cpu", reps=1) | kwargs
    with pytest.raises(ValueError, match=message):
        run_kernel_bench(**settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_refuses_a_missing_gpu_and_unreadable_token_counts(tmp_path):
    out = tmp_path / "k.json"
    result = CliRunner().invoke(app, ["bench", "quant-kernels", "--device", "cuda", "--json", str(out)])
    assert result.exit_code == 2 and "torch sees no CUDA GPU" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["bench", "quant-kernels", "--tokens", "1,eight", "--json", str(out)])
    assert result.exit_code == 2 and "give comma-separated whole numbers" in result.output and not out.exists()
