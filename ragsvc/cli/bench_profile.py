"""`ragsvc bench decode-profile`: where one decode step's time goes (ragsvc/bench/serving_profile.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ragsvc.bench.serving_config import OMP_WAIT
from ragsvc.cli.bench import LOG_FORMAT, app, set_wait_policy
from ragsvc.cli.common import checked_out, fail

if TYPE_CHECKING:
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine

PROFILE_JSON = Path("eval/results/decode-profile.json")


@app.command("decode-profile")
def decode_profile_command(
    model: Annotated[str | None, typer.Option(help="local model \\[default: RAGSVC_MODEL__MODEL or smollm2]")] = None,
    weights: Annotated[str | None, typer.Option(help="bf16 | int8 | q4 | q4-all \\[default: RAGSVC_MODEL__WEIGHTS]")
                       ] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16")] = None,
    concurrency: Annotated[str, typer.Option(help="comma-separated numbers of sequences decoding together")] = "1,8",
    prompt_tokens: Annotated[int, typer.Option(help="tokens of each random prompt (the context decoded behind)")
                             ] = 150,
    steps: Annotated[int, typer.Option(help="decode steps timed per level")] = 24,
    threads: Annotated[int | None, typer.Option(help="CPU threads")] = None,
    omp_wait: Annotated[str, typer.Option(help="passive | spin (as `bench serving`)")] = "passive",
    cache_dir: Annotated[str | None, typer.Option(help="model cache \\[default: <data dir>/models]")] = None,
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result")] = PROFILE_JSON,
    serving_requests: Annotated[int, typer.Option(
        help="instead: profile this many requests of `bench serving`'s workload (prompts 100-600 tokens, 64 out, "
             "closed loop) at each --concurrency, prefill and decode steps apart (0: decode steps only)")] = 0,
) -> None:
    """Milliseconds per decode step of each linear, attention, norms, rotary, sampling and the Python between;
    with --serving-requests, seconds of each over a whole serving-benchmark level, by step kind."""
    if omp_wait not in OMP_WAIT:
        raise fail(ValueError(f"omp_wait {omp_wait!r}: choose {' or '.join(OMP_WAIT)}"))
    set_wait_policy(omp_wait)
    from ragsvc.bench.serving_profile import profile_decode
    from ragsvc.cli.common import settings
    from ragsvc.serving.config import EngineConfig
    from ragsvc.serving.engine import LLMEngine

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        levels = [int(c) for c in concurrency.split(",")]
        config = EngineConfig.from_settings(settings(), model=model, weights=weights, dtype=dtype, num_threads=threads,
                                            cache_dir=cache_dir)
        engine = LLMEngine.from_config(config)
        if serving_requests > 0:
            _profile_serving(engine, levels, serving_requests, config, json_out)
            return
        profiles = [profile_decode(engine, concurrency=c, prompt_tokens=prompt_tokens, steps=steps) for c in levels]
    except ValueError as exc:
        raise fail(exc) from exc
    _write_profiles(json_out, engine, config, "profiles", profiles)
    for p in profiles:
        typer.echo(f"concurrency {p.concurrency}: {p.ms_per_step:.2f} ms per step over {p.steps} steps")
        for part, ms in p.parts_ms.items():
            typer.echo(f"  {part:<16} {ms:8.2f} ms  ({p.calls_per_step.get(part, 0)} calls)")
    typer.echo(f"wrote {json_out}")


def _profile_serving(engine: LLMEngine, levels: list[int], num_requests: int, config: EngineConfig,
                     json_out: Path) -> None:
    """`bench serving`'s workload (its seeds: the same prompts as its run at each level), after its warm-up."""
    from ragsvc.bench.serving_profile import profile_workload
    from ragsvc.bench.serving_run import run_ragsvc
    from ragsvc.bench.serving_workload import make_workload

    if num_requests < max(levels):
        raise ValueError(f"--serving-requests {num_requests} is below the highest level {max(levels)}")
    warmup = make_workload(engine.tokenizer, num_requests=4, prompt_tokens=(50, 100), output_tokens=(8, 8), seed=1)
    run_ragsvc(engine, warmup, concurrency=4)
    profiles = [profile_workload(engine, make_workload(engine.tokenizer, num_requests=num_requests,
                                                       prompt_tokens=(100, 600), output_tokens=(64, 64), seed=c),
                                 concurrency=c) for c in levels]
    _write_profiles(json_out, engine, config, "serving_profiles", profiles)
    for p in profiles:
        typer.echo(f"concurrency {p.concurrency}: {p.tok_per_s:.2f} tok/s, {p.wall_s:.2f} s")
        for kind, parts in p.parts_s.items():
            typer.echo(f"  {kind}: {p.steps[kind]} steps, {p.seconds[kind]:.2f} s")
            for part, sec in parts.items():
                typer.echo(f"    {part:<16} {sec:8.3f} s")
    typer.echo(f"wrote {json_out}")


def _write_profiles(json_out: Path, engine: LLMEngine, config: EngineConfig, key: str, profiles: Sequence[Any]
                    ) -> None:
    """One JSON for both modes: the run's provenance (model, weights, git, OpenMP settings, CPU) and `key`'s
    profiles as plain dicts."""
    from ragsvc.bench.provenance import package_git_sha
    from ragsvc.bench.serving_run import cpu_record
    from ragsvc.evals.results import write_json_atomic

    document = {
        "model": engine.model_name, "weights": config.weights, "dtype": config.dtype, "git_sha": package_git_sha(),
        "omp_env": {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
        "cpu": cpu_record(quantised=config.weights != "bf16"),
        key: [dataclasses.asdict(p) for p in profiles],
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_out, document)
