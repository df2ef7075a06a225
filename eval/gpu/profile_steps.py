"""Where a GPU step's time goes: prompt reads (TTFT), a shared-prefix read, and decode steps replayed from CUDA
graphs, for the random-weight folders eval/gpu/random_models.py writes.

    python3 eval/gpu/profile_steps.py MODELS_FOLDER OUT_FOLDER [--device cuda|cpu]

For each case it prints the wall time (medians over fresh prompts; every step ends with token ids copied to the
host, so the times are synchronised) and writes torch.profiler's tables to OUT_FOLDER/profile-tables.txt: by
device time (which kernels the GPU spends the step in) and by host time (what Python and the launches cost around
them). The device time of a step against its wall time says whether the step waits on the GPU or on the host.
`--device cpu` runs the same cases on a CPU (to check the script, not to measure).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ragsvc.serving.config import EngineConfig
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.sampling_params import SamplingParams

_count = iter(range(1_000_000))


def _prompt(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(100, 40_000, size=n).tolist()  # ids every random model's vocabulary holds


def _first_token_s(engine: LLMEngine, prompt: list[int]) -> float:
    rid = f"p{next(_count)}"
    start = time.perf_counter()
    engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=1))
    while not any(o.request_id == rid and o.output_token_ids for o in engine.step()):
        pass
    return time.perf_counter() - start


def _decode_ms(engine: LLMEngine, rng: np.random.Generator, batch: int, steps: int) -> float:
    """Milliseconds a decode-only step of `batch` sequences takes (after their prompts are read)."""
    params = SamplingParams(temperature=0.0, max_tokens=steps + 8, ignore_eos=True)
    for _ in range(batch):
        engine.add_request(f"d{next(_count)}", _prompt(rng, 64), params)
    for _ in range(4):  # the prompts, then a few decode steps
        engine.step()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    elapsed = time.perf_counter() - start
    while engine.has_unfinished():
        engine.step()
    return 1000 * elapsed / steps


def _tables(prof: profile, title: str, device: str) -> str:
    """The profile's tables by device time and by host time, under `title`."""
    averages = prof.key_averages()
    by_device = averages.table(sort_by=f"{device}_time_total", row_limit=25, max_name_column_width=70)
    by_host = averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70)
    return f"== {title}, by device time\n{by_device}\n\n== {title}, by host time\n{by_host}\n\n"


def _device_total_ms(prof: profile) -> float:
    """GPU time summed over the profile's device events (its kernels, and any copies or memsets; no host ops)."""
    total_us = 0.0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            total_us += evt.device_time
    return total_us / 1000


def run(models: Path, out: Path, device: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp()  # the quantised weights' cache
    rng = np.random.default_rng(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    lines, tables = [], []
    cases = [("smol", "bf16", "auto", True), ("smol", "bf16", "auto", False), ("qwen", "q4", "auto", True),
             ("qwen", "bf16", "auto", True), ("qwen", "bf16", "auto", False), ("smol", "bf16", "off", True)]
    for model, weights, graphs, fused in cases:
        name = (f"{model}-{weights}" + ("-no-graphs" if graphs == "off" else "")
                + ("" if fused else "-torch-elementwise"))
        engine = LLMEngine.from_config(EngineConfig(model=str(models / model), device=device, weights=weights,
                                                    max_num_seqs=16, cache_dir=scratch, decode_graphs=graphs,
                                                    gpu_kernels=fused))
        _first_token_s(engine, _prompt(rng, 64))  # warm-up
        ttft = [_first_token_s(engine, _prompt(rng, n)) * 1000 for n in (300, 301, 457, 600, 128)]
        prefix = _prompt(rng, 1000)
        cold = _first_token_s(engine, prefix + _prompt(rng, 24)) * 1000
        warm = _first_token_s(engine, prefix + _prompt(rng, 24)) * 1000
        decode = {b: _decode_ms(engine, rng, b, 32) for b in (1, 8)}
        lines.append(f"{name}: prompt read (TTFT) ms {[round(t, 1) for t in ttft]} median "
                     f"{statistics.median(ttft):.1f}; 1000-token prefix cold {cold:.1f} warm {warm:.1f}; "
                     f"decode step ms batch 1 {decode[1]:.2f}, batch 8 {decode[8]:.2f}")
        print(lines[-1], flush=True)
        with profile(activities=activities) as prof:
            _first_token_s(engine, _prompt(rng, 400))
        text = _tables(prof, "a 400-token prompt read", device)
        if device == "cuda":
            lines.append(f"{name}: a 400-token prompt read: kernels {_device_total_ms(prof):.1f} ms")
            print(lines[-1], flush=True)
        with profile(activities=activities) as prof:  # the whole request: its prompt, then 23 decode steps
            _decode_ms(engine, rng, 1, 16)
        more = _tables(prof, "a 64-token prompt and its 23 batch-1 decode steps", device)
        tables.append(f"######## {name}\n{text}{more}")
        if device == "cuda":
            lines.append(f"{name}: kernels over a 64-token prompt and its 23 batch-1 decode steps: "
                         f"{_device_total_ms(prof):.1f} ms")
            print(lines[-1], flush=True)
        del engine
        if device == "cuda":
            torch.cuda.empty_cache()
    print("\n".join(lines))
    (out / "profile-steps.txt").write_text("\n".join(lines) + "\n")
    (out / "profile-tables.txt").write_text("".join(tables))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    run(args.models, args.out, args.device)
