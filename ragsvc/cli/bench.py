"""`ragsvc bench search|serving|code`: the benchmarks in `ragsvc.bench`, run from the terminal.

Each command parses its flags, calls the benchmark's plain function, writes the JSON it returns and prints a
summary. The benchmark modules are imported inside the commands (they load numpy, torch, faiss); only
`ragsvc.bench.serving`, which is light on purpose, is read at start-up for its list of systems.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ragsvc.bench.serving_config import DEFAULT_OUT as SERVING_JSON
from ragsvc.bench.serving_config import SPIN_COUNT, SYSTEMS
from ragsvc.cli.common import checked_out, fail
from ragsvc.cli.progress import TqdmProgress

app = typer.Typer(help="Benchmarks that run the peers in the same run and write JSON under eval/results/.",
                  no_args_is_help=True)

SEARCH_JSON = Path("eval/results/bench-search.json")
SEARCH_CACHE = Path("eval/cache/bench-search")
"""Embedded corpus and built indexes, kept between runs (embedding 200k passages takes about an hour)."""
CODE_JSON = Path("eval/results/code.json")
FLARE_JSON = Path("eval/results/bench-flare.json")
QUANT_JSON = Path("eval/results/quant-quality.json")
KERNELS_JSON = Path("eval/results/quant-kernels.json")
FLARE_DATA = Path("eval/cache/bench-flare")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
logger = logging.getLogger(__name__)


@app.command("search")
def search_command(
    json_path: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result")] = SEARCH_JSON,
    num_vectors: Annotated[int, typer.Option(help="vectors in the index (real passages only)")] = 200_000,
    num_queries: Annotated[int, typer.Option(help="held-out queries")] = 1_000,
    configs: Annotated[str | None, typer.Option(help="comma-separated config names or prefixes")] = None,
    cache_dir: Annotated[Path, typer.Option(help="embedding + index cache")] = SEARCH_CACHE,
    data_dir: Annotated[Path | None, typer.Option(
        help="evaluation data \\[default: RAGSVC_EVAL__DATA_ROOT, else ../shared/data]")] = None,
    http: Annotated[bool, typer.Option(help="also measure HTTP vs in-process QPS")] = True,
    http_vectors: Annotated[int, typer.Option(help="size of the HTTP benchmark collection")] = 50_000,
) -> None:
    """Recall@10, single-thread QPS and index bytes per config, peers in the same run; JSON to --json."""
    from ragsvc.bench.search import run_search_bench, write_json
    from ragsvc.cli.common import settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        result = run_search_bench(num_vectors=num_vectors, num_queries=num_queries, configs=configs,
                                  cache_dir=cache_dir, data_dir=data_dir or settings().eval.data_root, http=http,
                                  http_vectors=http_vectors,
                                  progress=lambda stage: TqdmProgress(stage, unit="text"),
                                  partial_json=json_path)
    except ValueError as exc:
        raise fail(exc) from exc
    write_json(json_path, result.to_json())
    for row in result.configs + result.peers:
        typer.echo(f"{row.name:<34} recall@10 {row.recall_at_10:.4f}  {row.qps:>9.1f} QPS  "
                   f"{row.index_bytes / 2**20:8.1f} MiB")
    for target in result.targets:
        typer.echo(f"target {target.name}: {'PASS' if target.passed else 'FAIL'} - {target.detail}")
    typer.echo(f"wrote {json_path}")


def _write(json_out: Path, document: Any, *, markdown: str | None = None) -> None:
    """The result as JSON at `json_out` (and its Markdown beside it, as .md), folders made as needed."""
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(document, indent=2))
    if markdown is not None:
        json_out.with_suffix(".md").write_text(markdown)


def _range(text: str) -> tuple[int, int]:
    """"100-600" -> (100, 600); "64" -> (64, 64)."""
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"token range {text!r}: give two whole numbers like 100-600, or one like 64") from None


@app.command("serving")
def serving_command(
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the results")] = SERVING_JSON,
    concurrency: Annotated[str, typer.Option(help="comma-separated concurrency levels")] = "1,8,32",
    num_requests: Annotated[int | None, typer.Option(help="requests per level \\[default: max(8, 2 x level)]")] = None,
    prompt_tokens: Annotated[str, typer.Option(help="prompt length range, tokens")] = "100-600",
    output_tokens: Annotated[str, typer.Option(help="output length range, tokens")] = "64-256",
    max_output: Annotated[int | None, typer.Option(help="cap on output tokens (shrinks the run)")] = None,
    systems: Annotated[str, typer.Option(help="comma-separated subset of " + ",".join(SYSTEMS))] = ",".join(SYSTEMS),
    hf_sequential_requests: Annotated[int, typer.Option(help="requests for the slow sequential HF peer")] = 4,
    model: Annotated[str, typer.Option(help="model alias, folder or .gguf file")] = "smollm2",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 (ragsvc and HF)")] = "auto",
    weights: Annotated[str, typer.Option(help="ragsvc's weights: bf16 | int8 | q4 | q4-all")] = "bf16",
    threads: Annotated[int, typer.Option(help="CPU threads for every system")] = 2,
    device: Annotated[str, typer.Option(help="ragsvc and HF: auto (a CUDA GPU when there is one) | cpu | cuda[:N]; "
                                             "llama.cpp stays on the CPU")] = "auto",
    llama_server: Annotated[str | None, typer.Option(help="path to llama.cpp's llama-server")] = None,
    llama_threads: Annotated[int | None, typer.Option(help="llama.cpp threads \\[default: --threads]")] = None,
    seed: Annotated[int, typer.Option(help="seed of the prompts and sampling")] = 0,
    omp_wait: Annotated[str, typer.Option(help="passive (idle threads sleep; robust on a shared box) | spin "
                                               "(spin ~0.3 ms first: each system nearer its best on a quiet one)")
                        ] = "passive",
    max_prefill_tokens: Annotated[int | None, typer.Option(
        help="ragsvc: most prompt tokens per step \\[default: the rest of the 2048-token step budget]")] = None,
    prefill_order: Annotated[str, typer.Option(help="ragsvc: admit waiting requests by arrival | shortest")
                             ] = "arrival",
    arrival_rate: Annotated[float | None, typer.Option(
        help="open loop: seeded Poisson arrivals, requests/s, at most --concurrency in flight, TTFT from arrival "
             "(ragsvc, llama.cpp) \\[default: closed loop]")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="ragsvc's model cache \\[default: <data dir>/models]")] = None,
    prefix_trials: Annotated[int, typer.Option(help="ragsvc: cold/warm shared-prefix TTFT pairs (0 skips)")] = 3,
    small_gemm: Annotated[bool, typer.Option(help="ragsvc: few-token bf16 linears (and float32 ones, where dtype "
                                                  "auto runs float32) on our small GEMMs where their per-CPU "
                                                  "plans measured them faster")] = True,
    wide_gemm: Annotated[bool, typer.Option(help="ragsvc: many-token bf16 linears multiplied in fp32 where the "
                                                 "per-CPU plan measured it faster")] = True,
    split_steps: Annotated[bool, typer.Option(help="ragsvc: steps of 32+ tokens as two halves of their sequences, "
                                                   "each on its own thread")] = True,
    cuda_graphs: Annotated[bool, typer.Option(help="ragsvc on a GPU: decode steps replayed from CUDA graphs "
                                                   "captured at start")] = True,
) -> None:
    """Throughput, TTFT/TPOT p50/p99, KV waste and prefix-cache TTFT: ragsvc vs HF vs llama.cpp."""
    from ragsvc.bench.serving import ServingBenchConfig, run_serving_bench

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        out_lo, out_hi = _range(output_tokens)
        if max_output is not None:
            out_lo, out_hi = min(out_lo, max_output), min(out_hi, max_output)
        cfg = ServingBenchConfig(
            model=model, dtype=dtype, weights=weights, concurrency=tuple(int(c) for c in concurrency.split(",")),
            num_requests=num_requests, prompt_tokens=_range(prompt_tokens), output_tokens=(out_lo, out_hi),
            hf_sequential_requests=hf_sequential_requests, systems=tuple(s.strip() for s in systems.split(",")),
            threads=threads, device=device, seed=seed, llama_server=llama_server, llama_threads=llama_threads,
            omp_wait=omp_wait, log_dir=str(json_out.parent), max_prefill_tokens=max_prefill_tokens,
            prefill_order=prefill_order, arrival_rate=arrival_rate, cache_dir=cache_dir, prefix_trials=prefix_trials,
            small_gemm=small_gemm, wide_gemm=wide_gemm, split_steps=split_steps, cuda_graphs=cuda_graphs,
        )
    except ValueError as exc:
        raise fail(exc) from exc
    set_wait_policy(cfg.omp_wait)
    try:
        result = run_serving_bench(cfg, on_progress=lambda r: _write(json_out, r.to_json())).to_json()
    except ValueError as exc:  # a setting only the run can check (a GPU asked for on a machine without one)
        raise fail(exc) from exc
    _write(json_out, result)
    for run in result["runs"]:
        typer.echo(json.dumps(run))
    typer.echo(json.dumps({k: result[k] for k in ("kv_waste_pct", "prefix_ttft_ms", "ratios_at_max_concurrency")}))
    typer.echo(f"wrote {json_out}")


@app.command("speculative")
def speculative_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-speculative.json"),
    data_root: Annotated[Path | None, typer.Option(
        help="folder holding hotpotqa_dev100/ \\[default: RAGSVC_EVAL__DATA_ROOT]")] = None,
    model: Annotated[str, typer.Option(help="packaged alias, HF folder or .gguf")] = "smollm2",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    num_prompts: Annotated[int, typer.Option(help="HotpotQA questions (the first N)")] = 20,
    max_tokens: Annotated[int, typer.Option(help="most output tokens per answer")] = 128,
    num_speculative_tokens: Annotated[int, typer.Option(help="most drafts per step (k)")] = 4,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    concurrency: Annotated[int, typer.Option(help="also run the prompts this many at once (1 = single stream only)")
                           ] = 1,
) -> None:
    """Single-stream decode: prompt-lookup speculation vs plain decoding on /v1/answer-style prompts."""
    from ragsvc.bench.speculative import SpeculativeBenchConfig, run_speculative_bench
    from ragsvc.cli.common import settings
    from ragsvc.errors import RagsvcError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    config = settings()
    root, cache = data_root or config.eval.data_root, config.model.cache_dir
    try:
        if root is None:
            raise ValueError("no data root: pass --data-root or set RAGSVC_EVAL__DATA_ROOT")
        cfg = SpeculativeBenchConfig(data_root=root, model=model, dtype=dtype, num_prompts=num_prompts,
                                     max_tokens=max_tokens, num_speculative_tokens=num_speculative_tokens,
                                     threads=threads, cache_dir=str(cache) if cache else None,
                                     concurrency=concurrency)
        result = run_speculative_bench(cfg).to_json()
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    _write(json_out, result)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "per_prompt"}, indent=2))
    typer.echo(f"wrote {json_out}")


@app.command("quant-quality")
def quant_quality_command(
    model: Annotated[str, typer.Option(help="packaged alias, HF folder or .gguf")] = "smollm2",
    weights: Annotated[str, typer.Option(help="formats, bf16 first (the reference)")] = "bf16,int8,q4",
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result")] = QUANT_JSON,
    text_tokens: Annotated[int, typer.Option(help="tokens of the fixed text scored for perplexity")] = 1024,
    num_prompts: Annotated[int, typer.Option(help="fixed prompts for greedy agreement (at most 20)")] = 20,
    max_tokens: Annotated[int, typer.Option(help="greedy tokens per prompt")] = 32,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="model cache \\[default: <data dir>/models]")] = None,
) -> None:
    """Quality cost of quantised weights: perplexity on a fixed text and greedy-token agreement with bf16."""
    from ragsvc.bench.quant_quality import run_quality

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        result = run_quality(model=model, weights=tuple(w.strip() for w in weights.split(",")), cache_dir=cache_dir,
                             text_tokens=text_tokens, num_prompts=num_prompts, max_tokens=max_tokens,
                             threads=threads)
    except ValueError as exc:
        raise fail(exc) from exc
    _write(json_out, result.to_json())
    for f in result.formats:
        typer.echo(f"{f.weights}: perplexity {f.perplexity:.3f}, greedy agreement {f.agreement}")


@app.command("quant-kernels")
def quant_kernels_command(
    model: Annotated[str, typer.Option(help="whose decode-step shapes: qwen2.5-1.5b | smollm2")] = "qwen2.5-1.5b",
    tokens: Annotated[str, typer.Option(help="comma-separated tokens per call (decode batch sizes)")] = "1,8,32",
    device: Annotated[str, typer.Option(help="auto (a CUDA GPU when there is one) | cpu | cuda[:N]")] = "auto",
    reps: Annotated[int, typer.Option(help="timed calls per case")] = 200,
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result")] = KERNELS_JSON,
) -> None:
    """The int8 and q4 linears against torch's bf16 linear on one model's shapes: time a call, GB/s, ratio."""
    from ragsvc.bench.quant_kernels import run_kernel_bench

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        try:
            counts = tuple(int(t) for t in tokens.split(","))
        except ValueError:
            raise ValueError(f"--tokens {tokens!r}: give comma-separated whole numbers, e.g. 1,8,32") from None
        result = run_kernel_bench(model=model, tokens=counts, device=device, reps=reps)
    except ValueError as exc:
        raise fail(exc) from exc
    _write(json_out, result.to_json())
    for t, per_format in result.step_us.items():
        ratios = ", ".join(f"{f} {per_format['bf16'] / v:.2f}x" for f, v in per_format.items() if f != "bf16")
        typer.echo(f"{t} token(s): linears of one step {per_format} us; bf16 time over: {ratios}")
    typer.echo(f"wrote {json_out}")


@app.command("flare")
def flare_command(
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result")] = FLARE_JSON,
    data_dir: Annotated[Path, typer.Option(help="store for the benchmark's collection")] = FLARE_DATA,
    model: Annotated[str | None, typer.Option(help="local model \\[default: RAGSVC_MODEL__MODEL or smollm2]")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16")] = None,
    theta: Annotated[float, typer.Option(help="FLARE's retrieval threshold")] = 0.6,
    max_rounds: Annotated[int, typer.Option(help="sentences per answer at most")] = 6,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """FLARE with the engine's prefix cache on vs off: cached prompt share and TTFT of rounds >= 2."""
    from ragsvc.bench.flare import FlareBenchConfig, run_flare_bench, sample_collection
    from ragsvc.cli.common import settings
    from ragsvc.retrieval.vector_store import VectorStore
    from ragsvc.serving.config import EngineConfig

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = settings(data_dir)
    try:
        engine = EngineConfig.from_settings(config, model=model, dtype=dtype, num_threads=threads)
        cfg = FlareBenchConfig(theta=theta, max_rounds=max_rounds, engine=engine)
    except (ValueError, TypeError) as exc:
        raise fail(exc) from exc
    store = VectorStore.open(data_dir)
    try:
        collection = sample_collection(store)
        bar = TqdmProgress("flare answers", unit="answer")
        try:
            result = run_flare_bench(store, collection, cfg, progress=bar)
        finally:
            bar.close()
    finally:
        store.close()
    _write(json_out, result.to_json())
    typer.echo(json.dumps({k: v for k, v in result.to_json().items() if k not in ("calls", "config")}, indent=2))
    typer.echo(f"wrote {json_out}")


@app.command("code")
def code_command(
    out: Annotated[Path, typer.Option("--json", "--out", callback=checked_out, help="JSON result file")] = CODE_JSON,
    cosqa: Annotated[Path, typer.Option(help="CoSQA in BEIR format")] = Path("../shared/data/cosqa"),
    library: Annotated[list[str] | None, typer.Option(help="installed package(s) for the docstring task")] = None,
    max_queries: Annotated[int, typer.Option(help="queries per quality task")] = 400,
    quality: Annotated[bool, typer.Option("--quality/--no-quality",
                                          help="run the quality tasks (CoSQA, docstring -> function)")] = True,
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="run the indexing-speed measurements")] = True,
    full_parse: Annotated[bool, typer.Option("--full-parse/--no-full-parse",
                                             help="also parse all of transformers (no embedding)")] = True,
    threads: Annotated[int, typer.Option(help="torch threads (1 is faster on an oversubscribed box)")] = 2,
) -> None:
    """Run the code-index benchmarks and write one JSON file (config, git sha, results)."""
    from ragsvc.bench.code import DEFAULT_LIBRARIES, run_code_bench

    result = run_code_bench(cosqa=cosqa, libraries=tuple(library) if library else DEFAULT_LIBRARIES,
                            max_queries=max_queries, quality=quality, speed=speed, full_parse=full_parse,
                            threads=threads, on_section=lambda section: typer.echo(json.dumps(section)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2))
    typer.echo(f"wrote {out}")


def set_wait_policy(omp_wait: str) -> None:
    """libgomp reads its wait policy once, when torch loads it: set it before torch is imported. GOMP_SPINCOUNT,
    when set, overrides OMP_WAIT_POLICY; a value the caller exported wins over the flag (the JSON records both)."""
    if "torch" in sys.modules:
        logger.warning("torch is already imported: omp_wait=%s cannot take effect in this process", omp_wait)
    if omp_wait == "spin":
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
        if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # the CLI's default; the flag asked to spin
            del os.environ["OMP_WAIT_POLICY"]
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if "GOMP_SPINCOUNT" in os.environ:
            logger.warning("GOMP_SPINCOUNT=%s is set: it overrides OMP_WAIT_POLICY", os.environ["GOMP_SPINCOUNT"])


@app.command("agents")
def agents_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-agents.json"),
    work_dir: Annotated[Path, typer.Option(help="folder for the two runs (emptied first)")] = Path(
        "eval/cache/bench-agents"),
    town: Annotated[Path, typer.Option(help="town folder")] = Path("agents/town"),
    hours: Annotated[float, typer.Option(help="simulated hours per mode")] = 0.5,
    tick_minutes: Annotated[int, typer.Option(help="simulated minutes per tick")] = 15,
    model: Annotated[str | None, typer.Option(help="local model \\[default: RAGSVC_MODEL__MODEL or smollm2]")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """A town's simulation batched vs one call at a time: agent-steps per minute, ratio, prefix-cache share."""
    from ragsvc.bench.agents import AgentsBenchConfig, run_agents_bench
    from ragsvc.cli.common import settings
    from ragsvc.embed.embedder import embedder_from_settings
    from ragsvc.errors import RagsvcError
    from ragsvc.serving.config import EngineConfig

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    config = settings()
    try:
        engine = EngineConfig.from_settings(config, model=model, num_threads=threads)
        cfg = AgentsBenchConfig(town=town, hours=hours, tick_minutes=tick_minutes, engine=engine)
        result = run_agents_bench(cfg, embedder=embedder_from_settings(config.embed), work_dir=work_dir,
                                  progress=lambda mode: TqdmProgress(f"{mode} ticks", unit="tick"))
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    _write(json_out, result.to_json())
    typer.echo(json.dumps({k: v for k, v in result.to_json().items() if k != "config"}, indent=2))
    typer.echo(f"wrote {json_out}")


@app.command("chat")
def chat_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-chat.json"),
    work_dir: Annotated[Path, typer.Option(help="folder for the two servers' data (emptied first)")] = Path(
        "eval/cache/bench-chat"),
    town: Annotated[Path, typer.Option(help="town folder whose residents are the agents")] = Path("agents/town"),
    sessions: Annotated[int, typer.Option(help="sessions talking at once")] = 4,
    messages: Annotated[int, typer.Option(help="messages per session")] = 3,
    max_tokens: Annotated[int, typer.Option(help="reply budget")] = 32,
    model: Annotated[str | None, typer.Option(help="local model \\[default: RAGSVC_MODEL__MODEL or smollm2]")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto | float32 | bfloat16")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """Chat sessions over the REST API at once vs one message at a time: messages/min, latency, cached share."""
    from ragsvc.agents.persona import load_town
    from ragsvc.bench.chat import ChatBenchConfig, run_chat_bench
    from ragsvc.cli.common import settings
    from ragsvc.errors import RagsvcError
    from ragsvc.serving.config import EngineConfig

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        load_town(town)  # a missing or broken town fails here, not after the servers start
        engine = EngineConfig.from_settings(settings(), model=model, dtype=dtype, num_threads=threads)
        cfg = ChatBenchConfig(town=town, sessions=sessions, messages=messages, max_tokens=max_tokens, engine=engine)
    except (ValueError, RagsvcError) as exc:
        raise fail(exc) from exc
    result = run_chat_bench(cfg, work_dir=work_dir)
    _write(json_out, result.to_json())
    typer.echo(json.dumps({k: v for k, v in result.to_json().items() if k != "config"}, indent=2))
    typer.echo(f"wrote {json_out}")


@app.command("load")
def load_command(
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result (and a .md beside it)")] = Path(
        "eval/results/bench-load.json"),
    url: Annotated[str | None, typer.Option(help="a running server; unset = start `ragsvc serve --sample`")] = None,
    work_dir: Annotated[Path, typer.Option(help="data folder of the server it starts (emptied first)")] = Path(
        "eval/cache/bench-load"),
    clients: Annotated[int, typer.Option(help="concurrent HTTP clients")] = 32,
    duration: Annotated[float, typer.Option(help="seconds per phase")] = 60.0,
    mix: Annotated[str, typer.Option(help="weights of search, ingest, delete, answer")] = "search=0.8,ingest=0.2",
    collection: Annotated[str, typer.Option(help="collection to load")] = "sample",
    search_only_first: Annotated[bool, typer.Option(help="run a search-only phase first (the peer)")] = True,
    warmup: Annotated[float, typer.Option(help="seconds each phase's mix runs first, not counted")] = 0.0,
    rounds: Annotated[int, typer.Option(
        help="slices each phase is cut into, the phases taking turns (a drift in the machine's speed then weighs "
             "on both); 1 runs each whole")] = 4,
) -> None:
    """N clients run a search/ingest/delete/answer mix for T seconds; p50/p99, errors, and no lost documents."""
    import shutil

    from ragsvc.bench.load import LoadConfig, parse_mix, run_load
    from ragsvc.bench.load_report import to_markdown

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        config = LoadConfig(clients=clients, duration_s=duration, mix=parse_mix(mix), collection=collection,
                            search_only_first=search_only_first, warmup_s=warmup, rounds=rounds)
    except ValueError as exc:
        raise fail(exc) from exc
    if url is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    result = run_load(config, url=url, data_dir=None if url else work_dir,
                      on_phase=lambda name: typer.echo(f"phase: {name}"))
    _write(json_out, result.to_json(), markdown=to_markdown(result))
    typer.echo(to_markdown(result))
    typer.echo(f"wrote {json_out} and {json_out.with_suffix('.md')}")


@app.command("route-cost")
def route_cost_command(
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result (and a .md beside it)")] = Path(
        "eval/results/bench-route-cost.json"),
    work_dir: Annotated[Path, typer.Option(help="data folder of the server it starts (emptied first)")] = Path(
        "eval/cache/bench-route-cost"),
    clients: Annotated[int, typer.Option(help="concurrent HTTP clients")] = 32,
    duration: Annotated[float, typer.Option(help="seconds each kind of request runs")] = 15.0,
) -> None:
    """Server CPU a request of each kind costs (search by vector or text, unchanged or new ingest), and the
    differences: a query's embedding, a document's embedding and write, an ingest in searches."""
    import shutil

    from ragsvc.bench.route_cost import RouteCostConfig, run_route_cost, to_markdown

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        config = RouteCostConfig(clients=clients, duration_s=duration)
    except ValueError as exc:
        raise fail(exc) from exc
    shutil.rmtree(work_dir, ignore_errors=True)
    result = run_route_cost(config, work_dir, on_kind=lambda kind: typer.echo(f"kind: {kind}"))
    _write(json_out, result.to_json(), markdown=to_markdown(result))
    typer.echo(to_markdown(result))
    typer.echo(f"wrote {json_out} and {json_out.with_suffix('.md')}")


@app.command("filter")
def filter_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-filter.json"),
    work_dir: Annotated[Path, typer.Option(help="folder for the catalog (emptied first)")] = Path(
        "eval/cache/bench-filter"),
    chunks: Annotated[int, typer.Option(help="one-chunk documents in the collection")] = 10_000,
    values: Annotated[int, typer.Option(help="values in the $in list")] = 25_000,
) -> None:
    """A large $in filter as a semi-join vs as the OR of equalities it used to be, on one duckdb catalog."""
    import shutil

    from ragsvc.bench.filter_in import run_filter_bench

    shutil.rmtree(work_dir, ignore_errors=True)
    result = run_filter_bench(work_dir, num_chunks=chunks, num_values=values)
    _write(json_out, result.to_json())
    typer.echo(json.dumps(result.to_json(), indent=2))


@app.command("ingest")
def ingest_command(
    json_out: Annotated[Path, typer.Option(
        "--json", callback=checked_out, help="where to write the result (and a .md beside it)")] = Path(
        "eval/results/bench-ingest.json"),
    data_root: Annotated[Path | None, typer.Option(
        help="folder holding scifact/ \\[default: RAGSVC_EVAL__DATA_ROOT]")] = None,
    num_docs: Annotated[int, typer.Option(help="SciFact documents (the first N: a fixed sample)")] = 2000,
    threads: Annotated[int, typer.Option(help="torch threads")] = 2,
    torch_paths: Annotated[bool, typer.Option(
        help="also time our torch float32 and bfloat16 encode paths (bfloat16 only where the CPU has bf16 "
             "instructions; emulated it is never chosen)")] = True,
) -> None:
    """Embedding paths vs sentence-transformers fp32 on the same chunks, end-to-end ingest and re-ingest speed."""
    from ragsvc.bench.ingest import IngestBenchConfig, run_ingest_bench, to_markdown
    from ragsvc.cli.common import settings
    from ragsvc.embed.embedder import embedder_from_settings

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    config = settings()
    root = data_root or config.eval.data_root
    try:
        if root is None:
            raise ValueError("no data root: pass --data-root or set RAGSVC_EVAL__DATA_ROOT")
        cfg = IngestBenchConfig(data_root=root, num_docs=num_docs, threads=threads, model=config.embed.model,
                                batch_size=config.embed.batch_size, torch_paths=torch_paths)
        result = run_ingest_bench(cfg, embedder_factory=lambda: embedder_from_settings(config.embed))
    except ValueError as exc:
        raise fail(exc) from exc
    _write(json_out, result, markdown=to_markdown(result))
    typer.echo(to_markdown(result))
    typer.echo(f"wrote {json_out} and {json_out.with_suffix('.md')}")


@app.command("soak")
def soak_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-soak.json"),
    work_dir: Annotated[Path, typer.Option(help="data folder of the servers (emptied first)")] = Path(
        "eval/cache/bench-soak"),
    kills: Annotated[int, typer.Option(help="processes killed with SIGKILL mid-ingest")] = 20,
    documents: Annotated[int, typer.Option(help="documents (one chunk each) of the ingest")] = 10_000,
    cli: Annotated[bool, typer.Option("--cli", help="kill `ragsvc ingest` of a corpus file instead of a server "
                                                    "taking an HTTP ingest")] = False,
) -> None:
    """kill -9 `ragsvc serve` (or `ragsvc ingest`, --cli) at random points of one ingest; lost, duplicated and
    index-missing documents after the last run finishes it."""
    import shutil

    from ragsvc.bench.soak import run_soak
    from ragsvc.bench.soak_cli import run_cli_soak
    from ragsvc.cli.common import settings
    from ragsvc.embed.embedder import embedder_from_settings

    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        if cli:
            embed = settings().embed
            result: Any = run_cli_soak(work_dir, embedder_factory=lambda: embedder_from_settings(embed),
                                       kills=kills, num_documents=documents)
        else:
            result = run_soak(work_dir, kills=kills, target_documents=documents)
    except ValueError as exc:
        raise fail(exc) from exc
    _write(json_out, result.to_json())
    typer.echo(json.dumps(result.to_json(), indent=2))


@app.command("cluster")
def cluster_command(
    json_out: Annotated[Path, typer.Option("--json", callback=checked_out, help="where to write the result")] = Path(
        "eval/results/bench-cluster.json"),
    num_vectors: Annotated[int, typer.Option(help="vectors (real passages, as bench search)")] = 5_000,
    num_queries: Annotated[int, typer.Option(help="held-out queries")] = 300,
    shards: Annotated[str, typer.Option(help="comma-separated shard counts")] = "1,2,4",
    replicas: Annotated[int, typer.Option(help="replicas of each shard on Ray")] = 2,
    clients: Annotated[str, typer.Option(help="comma-separated concurrent client counts")] = "1,16",
    kill_shards: Annotated[int, typer.Option(help="shard count of the kill run (0: no kill run)")] = 2,
    hedge_ms: Annotated[float | None, typer.Option(help="ask the next replica after this \\[default: deadline/2]")
                        ] = None,
    address: Annotated[str, typer.Option(help="Ray cluster: local, auto or ray://host:port")] = "local",
    cache_dir: Annotated[Path, typer.Option(help="embedding cache shared with bench search")] = SEARCH_CACHE,
    work_dir: Annotated[Path, typer.Option(help="replica shard files")] = Path("eval/cache/bench-cluster"),
    data_dir: Annotated[Path | None, typer.Option(
        help="evaluation data \\[default: RAGSVC_EVAL__DATA_ROOT, else ../shared/data]")] = None,
) -> None:
    """In-process ShardedIndex vs Ray shard actors: recall, QPS, p50/p99, fan-out overhead, one actor killed."""
    from ragsvc.bench.cluster import run_cluster_bench
    from ragsvc.bench.search import write_json
    from ragsvc.cli.common import settings

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        result = run_cluster_bench(
            num_vectors=num_vectors, num_queries=num_queries, cache_dir=cache_dir, work_dir=work_dir,
            data_dir=data_dir or settings().eval.data_root, shard_counts=[int(s) for s in shards.split(",")],
            replicas=replicas, client_counts=[int(c) for c in clients.split(",")], kill_shards=kill_shards or None,
            hedge_ms=hedge_ms, address=address)
    except ValueError as exc:
        raise fail(exc) from exc
    write_json(json_out, result.to_json())
    for row in result.rows:
        load = "  ".join(f"{p.clients}c {p.qps:.0f} QPS p50 {p.p50_ms:.2f} p99 {p.p99_ms:.2f} ms" for p in row.load)
        typer.echo(f"{row.system:<10} {row.shards} shard(s) x{row.replicas}  recall@10 {row.recall_at_10:.4f}  "
                   f"identical {row.identical_to_in_process}  {load}")
    if result.kill is not None:
        typer.echo(f"kill run: {json.dumps(dataclasses.asdict(result.kill))}")
    typer.echo(f"wrote {json_out}")
