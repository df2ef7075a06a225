"""The serving benchmark's workload and metrics: seeded prompts of exact token lengths, per-request timings,
and the summary every system is reported with (tok/s, TTFT and TPOT p50/p99).

Prompts are random vocabulary tokens, decoded and re-encoded so that the ids are ones the tokenizer itself
would produce (what vLLM's random dataset does): every system gets the very same token ids, so prompt lengths
match exactly across ragsvc, HF and llama.cpp (the GGUF carries the same vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ragsvc.bench.serving_config import ServingBenchConfig


@dataclass(frozen=True, slots=True)
class BenchRequest:
    prompt_ids: list[int]
    max_tokens: int
    """Exact output length: every system runs with EOS ignored, so all generate the same number of tokens."""


@dataclass(slots=True)
class RequestTiming:
    """Wall-clock marks of one request (time.perf_counter seconds)."""

    start: float
    first_token: float | None = None
    end: float | None = None
    num_output_tokens: int = 0

    @property
    def ttft_s(self) -> float:
        assert self.first_token is not None
        return self.first_token - self.start

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first; None for one-token outputs."""
        if self.end is None or self.first_token is None or self.num_output_tokens < 2:
            return None
        return (self.end - self.first_token) / (self.num_output_tokens - 1)


@dataclass(frozen=True, slots=True)
class RunSummary:
    system: str
    dtype: str
    concurrency: int
    tok_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    num_requests: int
    other_cpu_s: float | None = None
    """CPU seconds other processes used while this run went (all cores x its wall time, less this process's CPU,
    the machine's idle time and, from `steal_cpu_s` on, the host's steal): near 0 when the run had the cores to
    itself; a run well above it shared them and its figures are not comparable. None for a system served by
    another process (llama.cpp) and in results from before it was kept."""
    steal_cpu_s: float | None = None
    """CPU seconds a virtual machine's host took from this one during the run (/proc/stat steal): like other
    processes, a run with much of it had fewer cores than it asked for. None where `other_cpu_s` is, and in
    results from before it was kept (their `other_cpu_s` includes it)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system, "dtype": self.dtype, "concurrency": self.concurrency,
            "tok_per_s": self.tok_per_s, "ttft_p50_ms": self.ttft_p50_ms, "ttft_p99_ms": self.ttft_p99_ms,
            "tpot_p50_ms": self.tpot_p50_ms, "tpot_p99_ms": self.tpot_p99_ms, "num_requests": self.num_requests,
            "other_cpu_s": self.other_cpu_s, "steal_cpu_s": self.steal_cpu_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, slots=True)
class ServingBenchResult:
    """One run of the serving benchmark: every system's summaries and what the run was configured with."""

    runs: tuple[RunSummary, ...]
    kv_waste_pct: float | None
    """Reserved-but-empty KV slots at the highest concurrency; None when ragsvc was not run."""
    prefix_ttft_ms: Mapping[str, float] | None
    """TTFT of a request on a shared prefix, {"cold", "warm"}; None when ragsvc was not run."""
    git_sha: str
    ratios_at_max_concurrency: Mapping[str, float]
    """ragsvc's throughput over each peer's (`ragsvc_vs_<system>`)."""
    config: ServingBenchConfig
    notes: Mapping[str, str]
    """Per system: how it ran, or why it was skipped or failed."""
    omp_env: Mapping[str, str | None]
    """The thread wait policy variables in effect (OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_NUM_THREADS)."""
    cpu: Mapping[str, Any] | None = None
    """The CPU it ran on: model, ISA flags the kernels use, cache sizes, logical CPUs, and the quantised
    kernels' measured blocking when ragsvc ran quantised weights on it; on a CUDA run, "gpu" names the GPU
    (None in results from before it was kept)."""
    ratios_by_concurrency: Mapping[str, Mapping[str, float]] | None = None
    """{level: ragsvc's throughput over each peer's at that level}; None in results from before it was kept."""

    def to_json(self) -> dict[str, Any]:
        out = {"runs": [r.as_json() for r in self.runs], "kv_waste_pct": self.kv_waste_pct,
               "prefix_ttft_ms": None if self.prefix_ttft_ms is None else dict(self.prefix_ttft_ms),
               "git_sha": self.git_sha, "ratios_at_max_concurrency": dict(self.ratios_at_max_concurrency),
               "config": portable_config(asdict(self.config)), "notes": dict(self.notes),
               "omp_env": dict(self.omp_env)}
        if self.cpu is not None:
            out["cpu"] = dict(self.cpu)
        if self.ratios_by_concurrency is not None:
            out["ratios_by_concurrency"] = {c: dict(r) for c, r in self.ratios_by_concurrency.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServingBenchResult:
        config: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()}
        return cls(tuple(RunSummary.from_json(r) for r in data["runs"]), data["kv_waste_pct"],
                   data["prefix_ttft_ms"], data["git_sha"], data["ratios_at_max_concurrency"],
                   ServingBenchConfig(**config), data["notes"], data["omp_env"], data.get("cpu"),
                   data.get("ratios_by_concurrency"))


PATH_KEYS = ("log_dir", "cache_dir", "llama_server", "model")
"""Config fields that may hold a path on the machine that ran the benchmark."""


def portable_config(config: Mapping[str, Any], keys: tuple[str, ...] = PATH_KEYS) -> dict[str, Any]:
    """`config` with each path field as a results file can be shared and committed: relative to the working
    folder (the repository) when under it, else `<outside the repository>/<name>`, so no home or temp folder of
    the machine that ran it is recorded. An alias ("smollm2") or a relative path stays as it is."""
    out = dict(config)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and Path(value).is_absolute():
            path, here = Path(value), Path.cwd()
            out[key] = path.relative_to(here).as_posix() if path.is_relative_to(here) else \
                f"<outside the repository>/{path.name}"
    return out


def plain_vocab(tokenizer: Any) -> np.ndarray:
    """Every token id except the special ones (BOS/EOS/chat markers)."""
    special = set(tokenizer.all_special_ids)
    return np.array([i for i in range(len(tokenizer)) if i not in special])


def random_prompt(tokenizer: Any, rng: np.random.Generator, num_tokens: int, vocab: np.ndarray) -> list[int]:
    """`num_tokens` ids that survive a decode/encode round trip, drawn from `vocab`."""
    ids: list[int] = []
    while len(ids) < num_tokens:  # re-encoding merges some tokens; top up until long enough
        draw = rng.choice(vocab, size=num_tokens - len(ids) + 8).tolist()
        text = tokenizer.decode(ids + draw)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids[:num_tokens]


def make_workload(
    tokenizer: Any, *, num_requests: int, prompt_tokens: tuple[int, int] = (100, 600),
    output_tokens: tuple[int, int] = (64, 256), seed: int = 0,
) -> list[BenchRequest]:
    """`num_requests` requests with prompt and output lengths uniform in the given inclusive ranges."""
    if tokenizer is None:
        raise ValueError("the model has no tokenizer, and the serving workload's prompts are text the tokenizer "
                         "has round-tripped: give a model folder with its tokenizer files")
    rng = np.random.default_rng(seed)
    vocab = plain_vocab(tokenizer)
    out = []
    for _ in range(num_requests):
        plen = int(rng.integers(prompt_tokens[0], prompt_tokens[1] + 1))
        olen = int(rng.integers(output_tokens[0], output_tokens[1] + 1))
        out.append(BenchRequest(prompt_ids=random_prompt(tokenizer, rng, plen, vocab), max_tokens=olen))
    return out


def _pct_ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 2) if values else float("nan")


def summarise(system: str, dtype: str, concurrency: int, timings: list[RequestTiming]) -> RunSummary:
    """Throughput = output tokens of all requests / wall time from the first start to the last end."""
    done = [t for t in timings if t.end is not None and t.first_token is not None]
    if not done:
        raise RuntimeError(f"{system} at concurrency {concurrency} finished no request")
    wall = max(t.end for t in done if t.end is not None) - min(t.start for t in done)
    tokens = sum(t.num_output_tokens for t in done)
    tpots = [x for x in (t.tpot_s for t in done) if x is not None]
    return RunSummary(
        system=system, dtype=dtype, concurrency=concurrency, tok_per_s=round(tokens / wall, 2),
        ttft_p50_ms=_pct_ms([t.ttft_s for t in done], 50), ttft_p99_ms=_pct_ms([t.ttft_s for t in done], 99),
        tpot_p50_ms=_pct_ms(tpots, 50), tpot_p99_ms=_pct_ms(tpots, 99), num_requests=len(done),
    )
