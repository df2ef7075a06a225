"""Llama-family decoders over the paged KV cache: Llama (SmolLM2, Llama 2/3) and Qwen2 (Qwen2, Qwen2.5,
Qwen2.5-Coder).

The two families share one module because Qwen2 is Llama with biases on the q/k/v projections (and a larger
rope theta, which comes from the config like any other rope parameter); a separate qwen2.py would copy ~200
lines to change one `bias=` flag. `ModelConfig.from_hf` is the family switch: it reads `model_type` and
`architectures` from config.json and refuses, with the reason, anything these layers would compute wrongly
(other families, sliding-window attention, activations other than SiLU).

Q/K/V and gate/up projections are fused into one matmul each (fewer, larger GEMMs per layer); `load_weights`
stacks the checkpoint's separate tensors (and biases) into them.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ragsvc.serving.layers import cpu_fused, cpu_gemm_bf16, cpu_gemm_f32, cpu_quant
from ragsvc.serving.layers.attention import AttentionMetadata, paged_attention
from ragsvc.serving.layers.cpu_gemm_f32 import use_f32_gemm
from ragsvc.serving.layers.cpu_gemm_plan import gemm_plan
from ragsvc.serving.layers.cpu_tuning import quant_plan
from ragsvc.serving.layers.cpu_wide_gemm import wide_plan
from ragsvc.serving.layers.linear import PackedLinear, packed_shapes, use_small_gemm, use_wide_gemm
from ragsvc.serving.layers.norm import RMSNorm
from ragsvc.serving.layers.quant_linear import QuantLinear, quantise_linears, use_quant_kernels
from ragsvc.serving.layers.rotary import RotaryEmbedding, apply_rotary
from ragsvc.serving.quant_cache import QuantCache, cache_file

logger = logging.getLogger(__name__)

FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
"""config.json `model_type` -> the `architectures` entry we implement. Mistral is left out (sliding-window
attention), as are Qwen2-MoE and Qwen3 (experts; q/k norms): each differs in more than a flag."""
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    """Biases on q/k/v: always in Qwen2, with `attention_bias` in Llama."""
    o_proj_bias: bool
    """Bias on the attention output projection: Llama's `attention_bias` only (Qwen2 has none there)."""
    mlp_bias: bool
    """Biases on gate/up/down: Llama's `mlp_bias`."""

    @classmethod
    def from_hf(cls, hf: Any) -> ModelConfig:
        """Our config from a transformers config; ValueError for a family these layers do not compute."""
        check_family(hf)
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
        llama_attention_bias = hf.model_type == "llama" and bool(getattr(hf, "attention_bias", False))
        return cls(
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
            head_dim=head_dim,
            rms_norm_eps=hf.rms_norm_eps,
            max_position_embeddings=hf.max_position_embeddings,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            qkv_bias=hf.model_type == "qwen2" or llama_attention_bias,
            o_proj_bias=llama_attention_bias,
            mlp_bias=hf.model_type == "llama" and bool(getattr(hf, "mlp_bias", False)),
        )


def quantise_model(model: LlamaForCausalLM, model_dir: Path, fmt: str, cache_dir: Path | None) -> None:
    """Swap the model's linears for `fmt` ("int8" / "q4") QuantLinears, through the packed-weight cache under
    `cache_dir` (None: quantise and cache nothing)."""
    if cache_dir is None:
        quantise_linears(model, fmt)
        return
    cache = QuantCache(cache_file(model_dir, fmt, cache_dir))
    quantise_linears(model, fmt, quantiser=cache)
    cache.save()


def check_family(hf: Any) -> None:
    """Refuse configs these layers would run silently wrong, naming what differs."""
    model_type = getattr(hf, "model_type", None)
    architectures = list(getattr(hf, "architectures", None) or [])
    if model_type not in FAMILIES:
        supported = ", ".join(f"{t} ({a})" for t, a in FAMILIES.items())
        raise ValueError(
            f"model type {model_type!r} (architectures {architectures}) is not supported; "
            f"ragsvc's engine runs {supported}; serve other models behind an OpenAI-compatible server"
        )
    if architectures and FAMILIES[model_type] not in architectures:
        raise ValueError(
            f"architectures {architectures} are not {FAMILIES[model_type]}; the engine runs causal LMs only"
        )
    act = getattr(hf, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported; the MLP computes silu(gate) * up")
    if getattr(hf, "use_sliding_window", False) or "sliding_attention" in (getattr(hf, "layer_types", None) or []):
        raise ValueError(
            "sliding-window attention is not supported; use a config with use_sliding_window false "
            "(the default of Qwen2.5 checkpoints)"
        )


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.o_proj_bias)
        self.scale = cfg.head_dim**-0.5
        self.kernels: ctypes.CDLL | None = None
        """The fused CPU kernels (rotary), or None for the torch path."""
        self.gpu_kernels: ModuleType | None = None
        """triton_fused on a GPU (rotary), or None for the torch path."""

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        t = x.shape[0]
        qkv = self.qkv_proj(x)  # (tokens, q_size + 2 * kv_size)
        # Rotate q and k in one pass: they sit side by side, so view them as heads + kv_heads heads.
        qk = qkv[:, : self.q_size + self.kv_size].view(t, self.num_heads + self.num_kv_heads, self.head_dim)
        if self.kernels is not None and cpu_fused.supports(qk):
            qk = cpu_fused.rotary(self.kernels, qk, *cos_sin)  # (tokens, heads + kv_heads, head_dim)
        elif self.gpu_kernels is not None:
            qk = self.gpu_kernels.rotary(qk, *cos_sin)
        else:
            qk = apply_rotary(qk, cos_sin)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, self.q_size + self.kv_size :].view(t, self.num_kv_heads, self.head_dim)
        out = paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, scale=self.scale)
        return self.o_proj(out.view(t, self.q_size))  # (tokens, hidden)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.intermediate = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.kernels: ctypes.CDLL | None = None
        """The fused CPU kernels (silu * up), or None for the torch path."""
        self.gpu_kernels: ModuleType | None = None
        """triton_fused on a GPU (silu * up), or None for the torch path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)  # (tokens, 2 * intermediate)
        if self.kernels is not None and cpu_fused.supports(gate_up):
            return self.down_proj(cpu_fused.silu_mul(self.kernels, gate_up))
        if self.gpu_kernels is not None:
            return self.down_proj(self.gpu_kernels.silu_mul(gate_up))
        gate, up = gate_up.split(self.intermediate, dim=-1)  # (tokens, intermediate) each
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x, residual: (tokens, hidden), residual None in the first layer -> (this layer's output, residual)."""
        if residual is None:
            residual, h = x, self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm.forward_residual(x, residual)
        h = self.self_attn(h, cos_sin, kv_cache, meta)
        h, residual = self.post_attention_layernorm.forward_residual(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, *, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = rotary

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        meta: AttentionMetadata,
        logit_rows: torch.Tensor,
    ) -> torch.Tensor:
        """input_ids, positions: (tokens,); logit_rows: (n,) packed rows to score -> (n, vocab) logits."""
        x = self.embed_tokens(input_ids)  # (tokens, hidden)
        cos_sin = self.rotary.lookup(positions, x.dtype)
        residual = None
        for layer, kv in zip(self.layers, kv_caches, strict=True):
            x, residual = layer(x, residual, cos_sin, kv, meta)
        assert residual is not None  # at least one layer ran
        x = x[logit_rows] + residual[logit_rows]  # only the rows we sample from reach lm_head
        return self.lm_head(self.norm(x))  # (n, vocab)

    def use_gpu_kernels(self) -> None:
        """Route RMSNorm, rotary and SiLU-and-multiply through the Triton kernels (triton_fused.py; imported here,
        since Triton comes with the `gpu` extra only). Called once, at load, before decode graphs are captured."""
        from ragsvc.serving.layers import triton_fused

        for module in self.modules():
            if isinstance(module, (RMSNorm, Attention, MLP)):
                module.gpu_kernels = triton_fused

    def use_cpu_kernels(self, kernels: ctypes.CDLL | None, *, small_gemm: bool = False,
                        wide_gemm: bool = False, f32_gemm: bool = False) -> None:
        """Route RMSNorm, rotary and SiLU-and-multiply through the fused CPU kernels, quantised linears through
        theirs with the blocking measured for this CPU, with `small_gemm` few-token bf16 linears through the
        small GEMM where its plan measured it faster (None: plain torch and oneDNN for all), with `wide_gemm`
        many-token bf16 linears through fp32 where that plan measured it faster, and with `f32_gemm` few-token
        float32 linears through cpu_gemm_f32 where its plan measured it faster. Called once, at load."""
        for module in self.modules():
            if isinstance(module, (RMSNorm, Attention, MLP)):
                module.kernels = kernels
        if any(isinstance(m, PackedLinear) for m in self.modules()):
            use_wide_gemm(self, wide_plan(packed_shapes(self, with_bias=True)) if wide_gemm else None)
            gemm = cpu_gemm_bf16.load() if kernels is not None and small_gemm else None
            use_small_gemm(self, gemm, gemm_plan(gemm, packed_shapes(self)) if gemm is not None else None)
        if kernels is not None and f32_gemm:
            routed = use_f32_gemm(self, cpu_gemm_f32.load())
            logger.info("%d float32 linear layers take the f32 decode GEMM for a few tokens", routed)
        if any(isinstance(m, QuantLinear) for m in self.modules()):
            quant = cpu_quant.load() if kernels is not None else None
            use_quant_kernels(self, quant, quant_plan(quant) if quant is not None else None)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (HF names) in, stacking q/k/v and gate/up into the fused projections."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        stacked = {
            "q_proj": ("qkv_proj", 0),
            "k_proj": ("qkv_proj", 1),
            "v_proj": ("qkv_proj", 2),
            "gate_proj": ("gate_up_proj", 0),
            "up_proj": ("gate_up_proj", 1),
        }
        for name, tensor in weights:
            name = name.removeprefix("model.")
            if "rotary_emb" in name:
                continue
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in stacked:
                fused, index = stacked[parts[-2]]
                target = ".".join([*parts[:-2], fused, parts[-1]])
                self._copy_shard(self._param(params, target), tensor, index, parts[-2])
            else:
                target = name
                self._param(params, target).data.copy_(tensor)
            loaded.add(target)
        if self.cfg.tie_word_embeddings or "lm_head.weight" not in loaded:
            self.lm_head.weight = self.embed_tokens.weight
            loaded.add("lm_head.weight")
        missing = set(params) - loaded
        if missing:
            raise ValueError(f"checkpoint lacks weights for {sorted(missing)[:5]}...; is it a Llama/Qwen2 model?")

    def _param(self, params: dict[str, nn.Parameter], name: str) -> nn.Parameter:
        if name not in params:
            raise ValueError(
                f"checkpoint weight {name!r} has no place in our {self.cfg.num_layers}-layer model "
                f"(q/k/v bias {self.cfg.qkv_bias}, mlp bias {self.cfg.mlp_bias}); does config.json match it?"
            )
        return params[name]

    def _copy_shard(self, param: nn.Parameter, tensor: torch.Tensor, index: int, kind: str) -> None:
        cfg = self.cfg
        if kind in ("q_proj", "k_proj", "v_proj"):
            sizes = [cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim]
        else:
            sizes = [cfg.intermediate_size, cfg.intermediate_size]
        start = sum(sizes[:index])
        param.data[start : start + sizes[index]].copy_(tensor)
