"""`ragsvc bench serving`: our engine against HF transformers (sequential and padded batch) and llama.cpp's
server, in one run, on one seeded workload (prompts 100-600 tokens, outputs 64-256, EOS ignored, greedy).

ragsvc is measured through the in-process LLMEngine, closed loop: `concurrency` requests are in flight, and a
new one is added as soon as one finishes (so continuous batching is what is measured, not HTTP). Also: KV
waste (slots reserved but not holding a token, averaged over the steps of the highest-concurrency run) and the
TTFT of a request sharing a 1,000-token prefix, cold (prefix never seen) vs warm (just served).
Warm-up requests are excluded everywhere. JSON goes to eval/results/ with the config and the git sha.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import subprocess
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from ragsvc.bench import serving_peers as peers
from ragsvc.bench.serving_workload import (
    BenchRequest,
    RequestTiming,
    RunSummary,
    make_workload,
    plain_vocab,
    random_prompt,
    summarise,
)
from ragsvc.serving.config import EngineConfig, resolve_device, resolve_dtype
from ragsvc.serving.engine import LLMEngine
from ragsvc.serving.loader import packaged_gguf, resolve_model_dir
from ragsvc.serving.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

SYSTEMS = ("ragsvc", "hf_sequential", "hf_batch", "llama_cpp")
DEFAULT_OUT = Path("eval/results/bench_serving.json")


@dataclass(frozen=True)
class ServingBenchConfig:
    model: str = "smollm2"
    dtype: str = "auto"
    """For ragsvc and HF alike (auto = bf16 with avx512_bf16); llama.cpp runs the GGUF's own quantisation."""
    concurrency: tuple[int, ...] = (1, 8, 32)
    num_requests: int | None = None
    """Requests per concurrency level; None = max(8, 2 x concurrency)."""
    prompt_tokens: tuple[int, int] = (100, 600)
    output_tokens: tuple[int, int] = (64, 256)
    hf_sequential_requests: int = 4
    """HF sequential runs ~20 tok/s: a few requests give its rate; it is reported at concurrency 1 only."""
    systems: tuple[str, ...] = SYSTEMS
    threads: int = 2
    seed: int = 0
    prefix_tokens: int = 1000
    prefix_trials: int = 3
    kv_cache_bytes: int = 1 << 30
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    llama_server: str | None = None
    """Path to llama.cpp's llama-server; None = look on PATH."""
    log_dir: str = "eval/results"

    def __post_init__(self) -> None:
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be positive integers, e.g. 1,8,32")
        for name in ("prompt_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} range ({lo}, {hi}) must satisfy 1 <= low <= high")

    def requests_at(self, concurrency: int) -> int:
        return self.num_requests or max(8, 2 * concurrency)


@dataclass
class _Results:
    runs: list[RunSummary] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    kv_waste_pct: float | None = None
    prefix_ttft_ms: dict[str, float] | None = None


_ids = itertools.count()


def run_ragsvc(engine: LLMEngine, requests: list[BenchRequest], *, concurrency: int,
               kv_samples: list[dict[str, Any]] | None = None) -> list[RequestTiming]:
    """Closed loop over the engine's own step(); times are taken when step() hands the tokens back."""
    pending = deque(requests)
    timings: dict[str, RequestTiming] = {}
    active = 0
    while pending or engine.has_unfinished():
        while pending and active < concurrency:
            req = pending.popleft()
            rid = f"bench-{next(_ids)}"
            timings[rid] = RequestTiming(start=time.perf_counter())
            engine.add_request(rid, req.prompt_ids,
                               SamplingParams(temperature=0.0, max_tokens=req.max_tokens, ignore_eos=True))
            active += 1
        outputs = engine.step()
        now = time.perf_counter()
        if kv_samples is not None:
            kv_samples.append(engine.kv_stats())
        for out in outputs:
            timing = timings[out.request_id]
            if timing.first_token is None and out.output_token_ids:
                timing.first_token = now
            if out.finished:
                timing.end, timing.num_output_tokens = now, len(out.output_token_ids)
                active -= 1
    return list(timings.values())


def kv_waste_pct(samples: list[dict[str, Any]]) -> float:
    """Reserved-but-empty KV slots over all sampled steps, as a percentage of reserved slots."""
    reserved = sum(s["slots_reserved"] for s in samples)
    stored = sum(s["tokens_stored"] for s in samples)
    return round(100.0 * (reserved - stored) / reserved, 3) if reserved else 0.0


def _ttft_once(engine: LLMEngine, prompt: list[int]) -> float:
    rid = f"prefix-{next(_ids)}"
    start = time.perf_counter()
    engine.add_request(rid, prompt, SamplingParams(temperature=0.0, max_tokens=1))
    while True:
        if any(o.request_id == rid and o.output_token_ids for o in engine.step()):
            return time.perf_counter() - start


def prefix_ttft_ms(engine: LLMEngine, *, prefix_tokens: int, trials: int, seed: int) -> dict[str, float]:
    """Median TTFT of prefix+suffix A on a never-seen prefix (cold), then prefix+suffix B (warm)."""
    rng = np.random.default_rng(seed + 7919)
    vocab = plain_vocab(engine.tokenizer)
    cold, warm = [], []
    for _ in range(trials):
        prefix = random_prompt(engine.tokenizer, rng, prefix_tokens, vocab)
        suffix_a, suffix_b = (random_prompt(engine.tokenizer, rng, 24, vocab) for _ in range(2))
        cold.append(_ttft_once(engine, prefix + suffix_a))
        warm.append(_ttft_once(engine, prefix + suffix_b))
    return {"cold": round(statistics.median(cold) * 1000, 2), "warm": round(statistics.median(warm) * 1000, 2)}


def _bench_ragsvc(cfg: ServingBenchConfig, workloads: dict[int, list[BenchRequest]], res: _Results) -> str:
    engine_cfg = EngineConfig(model=cfg.model, dtype=cfg.dtype, num_threads=cfg.threads,
                              kv_cache_bytes=cfg.kv_cache_bytes, max_num_seqs=cfg.max_num_seqs,
                              max_num_batched_tokens=cfg.max_num_batched_tokens)
    dtype = str(resolve_dtype(engine_cfg, resolve_device(engine_cfg))).removeprefix("torch.")
    engine = LLMEngine.from_config(engine_cfg)
    warmup = make_workload(engine.tokenizer, num_requests=4, prompt_tokens=(50, 100), output_tokens=(8, 8),
                           seed=cfg.seed + 1)
    run_ragsvc(engine, warmup, concurrency=4)
    top = max(cfg.concurrency)
    for c in cfg.concurrency:
        samples: list[dict[str, Any]] = []
        timings = run_ragsvc(engine, workloads[c], concurrency=c, kv_samples=samples if c == top else None)
        res.runs.append(summarise("ragsvc", dtype, c, timings))
        logger.info("ragsvc c=%d: %s", c, res.runs[-1])
        if c == top:
            res.kv_waste_pct = kv_waste_pct(samples)
    res.prefix_ttft_ms = prefix_ttft_ms(engine, prefix_tokens=cfg.prefix_tokens, trials=cfg.prefix_trials,
                                        seed=cfg.seed)
    return dtype


def _bench_hf(cfg: ServingBenchConfig, workloads: dict[int, list[BenchRequest]], res: _Results, dtype: str,
              pad_id: int) -> None:
    model = peers.load_hf_model(resolve_model_dir(cfg.model), getattr(torch, dtype))
    peers.run_hf(model, [BenchRequest(prompt_ids=workloads[min(workloads)][0].prompt_ids[:50], max_tokens=8)],
                 batch_size=1, pad_id=pad_id)  # warm-up
    if "hf_sequential" in cfg.systems:
        reqs = workloads[min(workloads)][: cfg.hf_sequential_requests]
        res.runs.append(summarise("hf_sequential", dtype, 1, peers.run_hf(model, reqs, batch_size=1, pad_id=pad_id)))
        logger.info("hf_sequential: %s", res.runs[-1])
    if "hf_batch" in cfg.systems:
        for c in (c for c in cfg.concurrency if c > 1):
            timings = peers.run_hf(model, workloads[c], batch_size=c, pad_id=pad_id)
            res.runs.append(summarise("hf_batch", dtype, c, timings))
            logger.info("hf_batch c=%d: %s", c, res.runs[-1])


def _bench_llama_cpp(cfg: ServingBenchConfig, workloads: dict[int, list[BenchRequest]], res: _Results) -> None:
    binary = peers.find_llama_server(cfg.llama_server)
    if binary is None:
        res.notes["llama_cpp"] = ("skipped: llama.cpp's llama-server binary not found (pass --llama-server PATH; "
                                  "llama-cpp-python's own server has no parallel slots, so it is not a fair peer)")
        return
    gguf = packaged_gguf(cfg.model) if not cfg.model.endswith(".gguf") else Path(cfg.model)
    quant = peers.gguf_quantisation(gguf)
    top = max(cfg.concurrency)
    ctx = cfg.prompt_tokens[1] + cfg.output_tokens[1] + 16
    log_path = Path(cfg.log_dir) / "llama_server.log"
    with peers.llama_server(binary, gguf, threads=cfg.threads, parallel=top, ctx_per_slot=ctx,
                            log_path=log_path) as url:
        peers.run_llama_cpp(url, [BenchRequest(workloads[min(workloads)][0].prompt_ids[:50], 8)], concurrency=1)
        for c in cfg.concurrency:
            res.runs.append(summarise("llama_cpp", quant, c, peers.run_llama_cpp(url, workloads[c], concurrency=c)))
            logger.info("llama_cpp c=%d: %s", c, res.runs[-1])
    res.notes["llama_cpp"] = f"llama-server {binary}, --parallel {top} --cont-batching --threads {cfg.threads}"


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ratios(runs: list[RunSummary], concurrency: int) -> dict[str, float]:
    """ragsvc's throughput over each peer's at `concurrency` (hf_sequential: its only, concurrency-1 run)."""
    ours = next((r.tok_per_s for r in runs if r.system == "ragsvc" and r.concurrency == concurrency), None)
    out = {}
    for r in runs:
        if ours and r.system != "ragsvc" and (r.concurrency == concurrency or r.system == "hf_sequential"):
            out[f"ragsvc_vs_{r.system}"] = round(ours / r.tok_per_s, 2)
    return out


def run_serving_bench(cfg: ServingBenchConfig) -> dict[str, Any]:
    """Run every selected system on the same workloads; returns the JSON document (see module docstring)."""
    torch.set_num_threads(cfg.threads)
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(cfg.model))
    workloads = {c: make_workload(tokenizer, num_requests=cfg.requests_at(c), prompt_tokens=cfg.prompt_tokens,
                                  output_tokens=cfg.output_tokens, seed=cfg.seed + c) for c in cfg.concurrency}
    res = _Results()
    auto = EngineConfig(dtype=cfg.dtype)
    dtype = str(resolve_dtype(auto, resolve_device(auto))).removeprefix("torch.")
    if "ragsvc" in cfg.systems:
        dtype = _bench_ragsvc(cfg, workloads, res)
    if {"hf_sequential", "hf_batch"} & set(cfg.systems):
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        _bench_hf(cfg, workloads, res, dtype, pad_id)
    if "llama_cpp" in cfg.systems:
        try:
            _bench_llama_cpp(cfg, workloads, res)
        except (RuntimeError, OSError, ValueError) as err:  # a peer failing must not lose the other numbers
            res.notes["llama_cpp"] = f"failed: {err}"
    return {
        "runs": [r.as_json() for r in res.runs], "kv_waste_pct": res.kv_waste_pct,
        "prefix_ttft_ms": res.prefix_ttft_ms, "git_sha": git_sha(),
        "ratios_at_max_concurrency": ratios(res.runs, max(cfg.concurrency)),
        "config": asdict(cfg), "notes": res.notes,
    }


app = typer.Typer(help="Benchmarks of the serving engine.", no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Benchmarks of the serving engine (a group, so `serving` stays a subcommand when mounted)."""


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


@app.command("serving")
def serving_command(
    json_out: Annotated[Path, typer.Option("--json", help="where to write the results")] = DEFAULT_OUT,
    concurrency: Annotated[str, typer.Option(help="comma-separated concurrency levels")] = "1,8,32",
    num_requests: Annotated[int | None, typer.Option(help="requests per level [default: max(8, 2 x level)]")] = None,
    prompt_tokens: Annotated[str, typer.Option(help="prompt length range, tokens")] = "100-600",
    output_tokens: Annotated[str, typer.Option(help="output length range, tokens")] = "64-256",
    max_output: Annotated[int | None, typer.Option(help="cap on output tokens (shrinks the run)")] = None,
    systems: Annotated[str, typer.Option(help="comma-separated subset of " + ",".join(SYSTEMS))] = ",".join(SYSTEMS),
    hf_sequential_requests: Annotated[int, typer.Option(help="requests for the slow sequential HF peer")] = 4,
    model: Annotated[str, typer.Option()] = "smollm2",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 (ragsvc and HF)")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for every system")] = 2,
    llama_server: Annotated[str | None, typer.Option(help="path to llama.cpp's llama-server")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Throughput, TTFT/TPOT p50/p99, KV waste and prefix-cache TTFT: ragsvc vs HF vs llama.cpp."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_lo, out_hi = _range(output_tokens)
    if max_output is not None:
        out_lo, out_hi = min(out_lo, max_output), min(out_hi, max_output)
    try:
        cfg = ServingBenchConfig(
            model=model, dtype=dtype, concurrency=tuple(int(c) for c in concurrency.split(",")),
            num_requests=num_requests, prompt_tokens=_range(prompt_tokens), output_tokens=(out_lo, out_hi),
            hf_sequential_requests=hf_sequential_requests, systems=tuple(s.strip() for s in systems.split(",")),
            threads=threads, seed=seed, llama_server=llama_server, log_dir=str(json_out.parent),
        )
    except ValueError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from err
    result = run_serving_bench(cfg)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2))
    for run in result["runs"]:
        typer.echo(json.dumps(run))
    typer.echo(json.dumps({k: result[k] for k in ("kv_waste_pct", "prefix_ttft_ms", "ratios_at_max_concurrency")}))
    typer.echo(f"wrote {json_out}")
