"""The serving benchmark's configuration: which systems, workloads and thread wait policy one run uses.

Kept apart from the run itself (`serving_run`, which imports torch) so the CLI can build and check a
config, and set the wait policy, before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYSTEMS = ("ragsvc", "hf_sequential", "hf_batch", "llama_cpp")
OMP_WAIT = ("passive", "spin")
SPIN_COUNT = "30000"
DEFAULT_OUT = Path("eval/results/bench_serving.json")


@dataclass(frozen=True)
class ServingBenchConfig:
    model: str = "smollm2"
    dtype: str = "auto"
    """For ragsvc and HF alike (auto = bf16 with avx512_bf16); llama.cpp runs the GGUF's own quantisation."""
    weights: str = "bf16"
    """ragsvc's weight format (bf16 | int8 | q4, see EngineConfig.weights); HF runs `dtype`, llama.cpp the GGUF."""
    concurrency: tuple[int, ...] = (1, 8, 32)
    num_requests: int | None = None
    """Requests per concurrency level, never fewer than the level itself (a level of 32 with 8 requests would
    never have 32 in flight); None = max(8, 2 x concurrency)."""
    prompt_tokens: tuple[int, int] = (100, 600)
    output_tokens: tuple[int, int] = (64, 256)
    hf_sequential_requests: int = 4
    """HF sequential runs ~20 tok/s: a few requests give its rate; it is reported at concurrency 1 only."""
    systems: tuple[str, ...] = SYSTEMS
    threads: int = 2
    device: str = "auto"
    """Where ragsvc and the HF peers run: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda[:N].
    llama.cpp runs on the CPU whatever this says (its server here is a CPU build)."""
    seed: int = 0
    prefix_tokens: int = 1000
    prefix_trials: int = 3
    """Cold/warm pairs for the shared-prefix TTFT; 0 skips it (prefix_ttft_ms is then None)."""
    kv_cache_bytes: int = 1 << 30
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    max_prefill_tokens: int | None = None
    """ragsvc's per-step prefill cap (EngineConfig.max_prefill_tokens); None = the rest of the step budget."""
    prefill_order: str = "arrival"
    """ragsvc's admission order (EngineConfig.prefill_order): "arrival" or "shortest"."""
    small_gemm: bool = True
    """ragsvc's few-token bf16 linears on the small GEMM where its plan picks it (EngineConfig.small_gemm)."""
    wide_gemm: bool = True
    """ragsvc's many-token bf16 linears widened to fp32 where its plan picks it (EngineConfig.wide_gemm)."""
    split_steps: bool = True
    """ragsvc's steps of 32+ tokens as two halves on two threads (EngineConfig.split_steps)."""
    cuda_graphs: bool = True
    """ragsvc's decode steps replayed from CUDA graphs on a GPU (EngineConfig.decode_graphs "auto"; False = "off")."""
    arrival_rate: float | None = None
    """None = closed loop; else requests arrive open loop at seeded Poisson times, this many per second, at most
    `concurrency` in flight, TTFT counted from arrival (serving_arrivals.py). ragsvc and llama.cpp only: HF's
    static batches cannot admit a request mid-batch, so its runs stay closed loop."""
    llama_server: str | None = None
    """Path to llama.cpp's llama-server; None = look on PATH."""
    llama_threads: int | None = None
    """llama.cpp's thread count; None = `threads`. Set apart because llama.cpp's best setting may not be ours: in
    a `ragsvc bench serving` run on a 2-vCPU VM its threadpool with 2 threads ran at ~0.7 tok/s against ~34 tok/s
    with 1."""
    omp_wait: str = "passive"
    """How idle threads wait, for every system in the run (set before torch loads):
    passive: OMP_WAIT_POLICY=PASSIVE (they sleep at once; llama.cpp --poll 0), what `ragsvc` itself sets,
      because spinning threads starve each other on a shared machine (with one core busy with other work, a c=32
      `ragsvc bench serving` run of ragsvc was 2.3x slower spinning than passive). It handicaps HF sequential
      most: batch-1 decode is a chain of tiny parallel regions, each paying a thread wake-up (12.5-16.9 tok/s
      passive vs 21.8-23.0 spinning in `ragsvc bench serving` on a 2-vCPU AMD EPYC VM).
    spin: GOMP_SPINCOUNT=30000 (~0.3 ms of spinning before sleeping, by libgomp's estimate; llama.cpp --poll 50),
      closer to libgomp's own default (~3 ms), i.e. how HF runs out of the box: each system near its best on a
      quiet machine."""
    log_dir: str = "eval/results"
    cache_dir: str | None = None
    """Where the engine caches de-quantised weights (None = the engine's default, <data_dir>/models)."""

    def __post_init__(self) -> None:
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
        if self.omp_wait not in OMP_WAIT:
            raise ValueError(f"omp_wait {self.omp_wait!r}: choose {' or '.join(OMP_WAIT)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r}: choose auto, cpu or cuda[:N]")
        if self.prefill_order not in ("arrival", "shortest"):
            raise ValueError(f"prefill_order {self.prefill_order!r}: choose arrival or shortest")
        if self.arrival_rate is not None and not self.arrival_rate > 0:
            raise ValueError(f"arrival_rate must be positive (requests per second), got {self.arrival_rate}")
        if self.prefix_trials < 0:
            raise ValueError(f"prefix_trials must be >= 0 (0 skips the prefix TTFT), got {self.prefix_trials}")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"num_requests must be at least 1, got {self.num_requests}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be positive integers, e.g. 1,8,32")
        for name in ("prompt_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} range ({lo}, {hi}) must satisfy 1 <= low <= high")

    def requests_at(self, concurrency: int) -> int:
        return max(self.num_requests, concurrency) if self.num_requests else max(8, 2 * concurrency)
