"""The decode-step profile on a tiny random Qwen2 in q4 (the quantised linears and the CPU kernels run): every
part is timed with its calls counted, the parts fit inside the step, and the engine is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragsvc.bench.serving_profile import KERNEL_PARTS, profile_decode, profile_workload
from ragsvc.bench.serving_workload import BenchRequest
from ragsvc.cli import app
from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.models import llama


@pytest.fixture(scope="module")
def engine(tiny_qwen2, tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    cache = tmp_path_factory.mktemp("profile-cache")
    return LLMEngine.from_config(EngineConfig(model=str(tiny_qwen2[0]), dtype="bfloat16", device="cpu", weights="q4",
                                              cache_dir=str(cache), num_kv_blocks=64))


def test_every_part_is_timed_inside_the_step(engine: LLMEngine) -> None:
    layers = engine.runner.model.cfg.num_layers
    profile = profile_decode(engine, concurrency=3, prompt_tokens=7, steps=4)
    assert profile.steps == 4 and profile.concurrency == 3
    calls = profile.calls_per_step
    for role in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "attention", "rotary", "silu_mul"):
        assert calls[role] == layers, role
    assert calls["lm_head"] == 1 and calls["norm"] == 2 * layers + 1 and calls["forward"] == 1
    parts = profile.parts_ms
    inside = sum(parts[p] for p in KERNEL_PARTS)
    assert inside <= parts["forward"] + 1e-3
    assert parts["forward"] + parts["sample"] + parts["schedule"] <= profile.ms_per_step + 1e-3
    assert not engine.has_unfinished()  # the profiled requests ran to the end


def test_timers_are_removed_afterwards(engine: LLMEngine) -> None:
    attention, run = llama.paged_attention, engine.runner.logits
    profile_decode(engine, concurrency=1, prompt_tokens=3, steps=1)
    assert llama.paged_attention is attention and engine.runner.logits == run
    assert all("forward" not in vars(m) for m in engine.runner.model.modules())


def test_bad_sizes_are_refused(engine: LLMEngine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        profile_decode(engine, concurrency=1, prompt_tokens=3, steps=0)
    with pytest.raises(ValueError, match="limit"):
        profile_decode(engine, concurrency=1, prompt_tokens=engine.max_model_len, steps=1)


def test_cli_writes_the_profile(tiny_qwen2, tmp_path: Path) -> None:
    folder, _ = tiny_qwen2
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["bench", "decode-profile", "--model", str(folder), "--weights", "q4",
                                      "--concurrency", "1,2", "--prompt-tokens", "4", "--steps", "2",
                                      "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [p["concurrency"] for p in doc["profiles"]] == [1, 2] and doc["weights"] == "q4"
    assert doc["cpu"]["model"] and "lm_head" in doc["profiles"][0]["parts_ms"]
    bad = CliRunner().invoke(app, ["bench", "decode-profile", "--model", str(folder), "--steps", "0",
                                   "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert bad.exit_code != 0 and "at least 1" in bad.output


def test_workload_profile_files_each_step_under_its_kind(engine: LLMEngine) -> None:
    """Three requests, two at a time: prefill steps (the first, and the one admitting the third request) and
    decode steps, each kind's parts inside its own steps' time, and the engine's step put back."""
    step = engine.step
    requests = [BenchRequest(prompt_ids=list(range(3, 3 + n)), max_tokens=4) for n in (9, 5, 7)]
    p = profile_workload(engine, requests, concurrency=2)
    assert p.num_requests == 3 and p.tok_per_s > 0
    assert p.steps["prefill"] >= 2 and p.steps["decode"] >= 3
    assert sum(p.seconds.values()) <= p.wall_s + 1e-3
    for kind in ("prefill", "decode"):
        parts = p.parts_s[kind]
        assert parts["forward"] <= p.seconds[kind] + 1e-3
        assert sum(parts[x] for x in KERNEL_PARTS if x in parts) <= parts["forward"] + 1e-3
        assert parts["attention"] > 0 and parts["qkv_proj"] > 0
    assert engine.step == step and not engine.has_unfinished()


def test_cli_serving_mode_refuses_what_it_cannot_run(tiny_qwen2, tmp_path: Path) -> None:
    """The serving mode's own path is `profile_workload` (tested above); the CLI says why it cannot run a
    tokenizer-less model or fewer requests than a level needs, instead of a traceback."""
    folder, _ = tiny_qwen2
    args = ["bench", "decode-profile", "--model", str(folder), "--cache-dir", str(tmp_path / "cache"),
            "--json", str(tmp_path / "p.json")]
    no_tokenizer = CliRunner().invoke(app, [*args, "--concurrency", "2", "--serving-requests", "2"])
    assert no_tokenizer.exit_code != 0 and "no tokenizer" in no_tokenizer.output
    too_few = CliRunner().invoke(app, [*args, "--concurrency", "4", "--serving-requests", "2"])
    assert too_few.exit_code != 0 and "below the highest level" in too_few.output
    assert not (tmp_path / "p.json").exists()
