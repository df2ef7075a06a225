"""Rotary position embeddings with the checkpoint's own theta and scaling.

The inverse frequencies come from transformers' ROPE_INIT_FUNCTIONS (default, linear, llama3, yarn, ...) so
every scaling scheme a checkpoint declares is reproduced exactly; cos/sin are tabulated once per position.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def rope_inv_freq(hf_config: Any) -> tuple[torch.Tensor, float]:
    """(head_dim // 2,) inverse frequencies and the attention scaling factor for this config."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = getattr(hf_config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type == "dynamic":
        raise ValueError(
            "dynamic NTK rope scaling depends on sequence length and is not supported; "
            "use a checkpoint with default/linear/llama3/yarn rope"
        )
    if rope_type == "default":
        theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        head_dim = getattr(hf_config, "head_dim", None) or (hf_config.hidden_size // hf_config.num_attention_heads)
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv_freq, 1.0
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    cos: torch.Tensor  # (positions, head_dim), registered buffers
    sin: torch.Tensor  # (positions, head_dim), first half negated

    def __init__(self, inv_freq: torch.Tensor, *, max_positions: int, scaling: float = 1.0) -> None:
        super().__init__()
        positions = torch.arange(max_positions, dtype=torch.float)
        freqs = torch.outer(positions, inv_freq)  # (positions, head_dim / 2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (positions, head_dim)
        self.register_buffer("cos", emb.cos() * scaling, persistent=False)
        sin = emb.sin() * scaling
        half = sin.shape[-1] // 2
        # The first half carries rotate_half's minus sign, so applying it is roll + multiply (no neg, no cat).
        self.register_buffer("sin", torch.cat((-sin[:, :half], sin[:, half:]), dim=-1), persistent=False)

    def lookup(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens,) positions -> cos, sin each (tokens, 1, head_dim); done once per step, shared by layers."""
        cos = self.cos.index_select(0, positions).unsqueeze(1).to(dtype)
        sin = self.sin.index_select(0, positions).unsqueeze(1).to(dtype)
        return cos, sin


def apply_rotary(x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: (tokens, heads, head_dim); cos/sin: (tokens, 1, head_dim) -> rotated x, same shape."""
    cos, sin = cos_sin
    return _apply(x, cos, sin)


def _apply(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    # rotate_half(x) * sin == roll(x, half) * signed_sin, bit for bit (a sign flip is exact).
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
