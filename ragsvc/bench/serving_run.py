"""The serving benchmark's run: ragsvc's engine driven closed-loop, then the peers, on the same workloads.
See `ragsvc.bench.serving` for what is measured and how to call it."""

from __future__ import annotations

import itertools
import json
import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragsvc.bench import serving_peers as peers
from ragsvc.bench.load import machine_idle_s, machine_steal_s, process_cpu_s
from ragsvc.bench.provenance import package_git_sha
from ragsvc.bench.serving_arrivals import arrival_offsets
from ragsvc.bench.serving_config import ServingBenchConfig
from ragsvc.bench.serving_workload import (
    BenchRequest,
    RequestTiming,
    RunSummary,
    ServingBenchResult,
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


@dataclass
class _Results:
    runs: list[RunSummary] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    kv_waste_pct: float | None = None
    prefix_ttft_ms: dict[str, float] | None = None
    on_run: Callable[[], None] = lambda: None
    """Called after every system/level: the CLI writes the JSON so far, so one timeout loses one level only."""

    def add(self, run: RunSummary) -> None:
        self.runs.append(run)
        logger.info("%s c=%d: %s", run.system, run.concurrency, run)
        self.on_run()


_ids = itertools.count()


def run_ragsvc(engine: LLMEngine, requests: list[BenchRequest], *, concurrency: int,
               kv_samples: list[dict[str, Any]] | None = None,
               arrivals: list[float] | None = None) -> list[RequestTiming]:
    """Over the engine's own step(); times are taken when step() hands the tokens back. `arrivals` (seconds
    after the start, one per request; serving_arrivals.py) = open loop: a request is added once it has arrived
    and fewer than `concurrency` are in flight, its clock started at its arrival. None = closed loop."""
    offsets = arrivals if arrivals is not None else [0.0] * len(requests)
    t0 = time.perf_counter()
    pending = deque(zip(requests, offsets, strict=True))
    timings: dict[str, RequestTiming] = {}
    active = 0
    while pending or engine.has_unfinished():
        now = time.perf_counter()
        while pending and active < concurrency and t0 + pending[0][1] <= now:
            req, offset = pending.popleft()
            rid = f"bench-{next(_ids)}"
            timings[rid] = RequestTiming(start=now if arrivals is None else t0 + offset)
            engine.add_request(rid, req.prompt_ids,
                               SamplingParams(temperature=0.0, max_tokens=req.max_tokens, ignore_eos=True))
            active += 1
        if not engine.has_unfinished():  # open loop, idle: wait for the next arrival
            time.sleep(max(0.0, t0 + pending[0][1] - time.perf_counter()))
            continue
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


def with_other_cpu(run: Callable[[], list[RequestTiming]]) -> tuple[list[RequestTiming], float, float]:
    """Run one system's level in this process -> (its timings, CPU seconds other processes used meanwhile, CPU
    seconds the host took from this virtual machine meanwhile): all cores x the wall time, less this process's
    CPU, the machine's idle time and the steal, is the others'. Runs of one configuration spread by several
    percent on a shared box; this says which of them had company, and whose."""
    pid = os.getpid()
    start, own, idle, steal = time.monotonic(), process_cpu_s(pid), machine_idle_s(), machine_steal_s()
    timings = run()
    elapsed = time.monotonic() - start
    stolen = max(0.0, machine_steal_s() - steal)
    other = (os.cpu_count() or 1) * elapsed - (process_cpu_s(pid) - own) - (machine_idle_s() - idle) - stolen
    return timings, round(max(0.0, other), 2), round(stolen, 2)


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
    engine_cfg = EngineConfig(model=cfg.model, dtype=cfg.dtype, device=cfg.device, num_threads=cfg.threads,
                              cache_dir=cfg.cache_dir, weights=cfg.weights,
                              kv_cache_bytes=cfg.kv_cache_bytes, max_num_seqs=cfg.max_num_seqs,
                              max_num_batched_tokens=cfg.max_num_batched_tokens,
                              max_prefill_tokens=cfg.max_prefill_tokens, prefill_order=cfg.prefill_order,
                              small_gemm=cfg.small_gemm, wide_gemm=cfg.wide_gemm,
                              split_steps=cfg.split_steps, decode_graphs="auto" if cfg.cuda_graphs else "off")
    dtype = str(resolve_dtype(engine_cfg, resolve_device(engine_cfg))).removeprefix("torch.")
    engine = LLMEngine.from_config(engine_cfg)
    warmup = make_workload(engine.tokenizer, num_requests=4, prompt_tokens=(50, 100), output_tokens=(8, 8),
                           seed=cfg.seed + 1)
    run_ragsvc(engine, warmup, concurrency=4)
    top = max(cfg.concurrency)
    for c in cfg.concurrency:
        samples: list[dict[str, Any]] = []
        timings, other, steal = with_other_cpu(partial(run_ragsvc, engine, workloads[c], concurrency=c,
                                                       kv_samples=samples if c == top else None,
                                                       arrivals=_arrivals(cfg, c, len(workloads[c]))))
        if c == top:
            res.kv_waste_pct = kv_waste_pct(samples)
        summary = summarise("ragsvc", dtype if cfg.weights == "bf16" else f"{dtype}+{cfg.weights}", c, timings)
        res.add(replace(summary, other_cpu_s=other, steal_cpu_s=steal))
    if cfg.prefix_trials > 0:
        res.prefix_ttft_ms = prefix_ttft_ms(engine, prefix_tokens=cfg.prefix_tokens, trials=cfg.prefix_trials,
                                            seed=cfg.seed)
    return dtype


def _bench_hf(cfg: ServingBenchConfig, workloads: dict[int, list[BenchRequest]], res: _Results, dtype: str,
              pad_id: int, device: torch.device) -> None:
    model = peers.load_hf_model(resolve_model_dir(cfg.model, cache_dir=cfg.cache_dir), getattr(torch, dtype), device)
    peers.run_hf(model, [BenchRequest(prompt_ids=workloads[min(workloads)][0].prompt_ids[:50], max_tokens=8)],
                 batch_size=1, pad_id=pad_id)  # warm-up
    if "hf_sequential" in cfg.systems:
        reqs = workloads[min(workloads)][: cfg.hf_sequential_requests]
        timings, other, steal = with_other_cpu(partial(peers.run_hf, model, reqs, batch_size=1, pad_id=pad_id))
        res.add(replace(summarise("hf_sequential", dtype, 1, timings), other_cpu_s=other, steal_cpu_s=steal))
    if "hf_batch" in cfg.systems:
        for c in (c for c in cfg.concurrency if c > 1):
            timings, other, steal = with_other_cpu(partial(peers.run_hf, model, workloads[c], batch_size=c,
                                                           pad_id=pad_id))
            res.add(replace(summarise("hf_batch", dtype, c, timings), other_cpu_s=other, steal_cpu_s=steal))


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
    threads = cfg.llama_threads or cfg.threads
    with peers.llama_server(binary, gguf, threads=threads, parallel=top, ctx_per_slot=ctx,
                            log_path=log_path, poll=0 if cfg.omp_wait == "passive" else 50) as url:
        peers.run_llama_cpp(url, [BenchRequest(workloads[min(workloads)][0].prompt_ids[:50], 8)], concurrency=1)
        res.notes["llama_cpp"] = (f"{Path(binary).name} --parallel {top} --cont-batching --threads {threads}; "
                                  f"{peers.llama_build_info(binary)}")
        for c in cfg.concurrency:
            arrivals = _arrivals(cfg, c, len(workloads[c]))
            res.add(summarise("llama_cpp", quant, c,
                              peers.run_llama_cpp(url, workloads[c], concurrency=c, arrivals=arrivals)))


def ratios(runs: list[RunSummary], concurrency: int) -> dict[str, float]:
    """ragsvc's throughput over each peer's at `concurrency` (hf_sequential: its only, concurrency-1 run)."""
    ours = next((r.tok_per_s for r in runs if r.system == "ragsvc" and r.concurrency == concurrency), None)
    out = {}
    for r in runs:
        if ours and r.system != "ragsvc" and (r.concurrency == concurrency or r.system == "hf_sequential"):
            out[f"ragsvc_vs_{r.system}"] = round(ours / r.tok_per_s, 2)
    return out


def _arrivals(cfg: ServingBenchConfig, concurrency: int, n: int) -> list[float] | None:
    """The level's open-loop arrival offsets (the same for every system), or None for closed loop."""
    if cfg.arrival_rate is None:
        return None
    return arrival_offsets(n, cfg.arrival_rate, seed=cfg.seed + concurrency)


def ratios_by_level(runs: list[RunSummary], levels: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """{concurrency: ratios(...)} for every level where ragsvc and a peer both ran."""
    out = {str(c): ratios(runs, c) for c in levels}
    return {c: r for c, r in out.items() if r}


def run_all(cfg: ServingBenchConfig,
            on_progress: Callable[[ServingBenchResult], None] | None = None) -> ServingBenchResult:
    """See `ragsvc.bench.serving.run_serving_bench`."""
    device = resolve_device(EngineConfig(device=cfg.device))  # a GPU asked for and missing: refused before any work
    torch.set_num_threads(cfg.threads)
    Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(cfg.model, cache_dir=cfg.cache_dir))
    workloads = {c: make_workload(tokenizer, num_requests=cfg.requests_at(c), prompt_tokens=cfg.prompt_tokens,
                                  output_tokens=cfg.output_tokens, seed=cfg.seed + c) for c in cfg.concurrency}
    res = _Results()
    cpu = cpu_record(quantised=cfg.weights != "bf16" and "ragsvc" in cfg.systems and device.type == "cpu")
    if device.type == "cuda":
        cpu = {**cpu, "gpu": gpu_record(device)}
    sha = package_git_sha()  # the code the run starts on: a commit made while it runs must not relabel it
    if on_progress is not None:
        res.on_run = lambda: on_progress(_result(cfg, res, cpu, sha, done=False))
    dtype = str(resolve_dtype(EngineConfig(dtype=cfg.dtype), device)).removeprefix("torch.")
    if "ragsvc" in cfg.systems:
        dtype = _bench_ragsvc(cfg, workloads, res)
    if "llama_cpp" in cfg.systems:  # before HF: the slowest peer last, so a time limit cuts the least
        try:
            _bench_llama_cpp(cfg, workloads, res)
        except (RuntimeError, OSError, ValueError) as err:  # a peer failing must not lose the other numbers
            res.notes["llama_cpp"] = f"failed: {err}"
    if {"hf_sequential", "hf_batch"} & set(cfg.systems):
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        _bench_hf(cfg, workloads, res, dtype, pad_id, device)
    return _result(cfg, res, cpu, sha, done=True)


def _result(cfg: ServingBenchConfig, res: _Results, cpu: dict[str, Any], sha: str, *,
            done: bool) -> ServingBenchResult:
    notes = dict(res.notes)
    if not done:
        notes["run"] = (f"incomplete: written after {len(res.runs)} system/level runs; the run was still going "
                        "(a timeout or crash ended it if this note is in the final file)")
    return ServingBenchResult(
        runs=tuple(res.runs), kv_waste_pct=res.kv_waste_pct, prefix_ttft_ms=res.prefix_ttft_ms,
        git_sha=sha, ratios_at_max_concurrency=ratios(res.runs, max(cfg.concurrency)), config=cfg,
        notes=notes,
        omp_env={name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
        cpu=cpu, ratios_by_concurrency=ratios_by_level(res.runs, cfg.concurrency),
    )


def gpu_record(device: torch.device) -> dict[str, Any]:
    """The GPU a CUDA run used, and the CUDA and Triton versions its kernels were built with."""
    props = torch.cuda.get_device_properties(device)
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    return {"name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda, "torch": torch.__version__, "triton": triton_version}


def cpu_record(*, quantised: bool) -> dict[str, Any]:
    """The CPU, as the kernels see it, and (for quantised runs) the blocking measured on it."""
    from ragsvc.serving.layers import cpu_quant
    from ragsvc.serving.layers.cpu_tuning import cpu_info, quant_plan

    record: dict[str, Any] = asdict(cpu_info())
    lib = cpu_quant.load() if quantised else None
    if lib is not None:
        record["quant_plan"] = asdict(quant_plan(lib))
    return json.loads(json.dumps(record))  # tuples as lists: the record equals itself read back from JSON


