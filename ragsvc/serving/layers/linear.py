"""Linear layers with oneDNN pre-packed weights for the CPU bf16 path.

F.linear on CPU re-lays-out the weight for oneDNN on every call; packing it once (what torch.compile's
freezing pass does) made the decode-step GEMMs of SmolLM2 at batch 32 ~1.3-3x faster here, bit-identical
in bf16. fp32 keeps plain F.linear: packed fp32 GEMMs round differently (~1e-4) and fp32 is our exactness
path against HF.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, *, batch_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()  # (out, in)
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (tokens, in) -> (tokens, out)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def pack_linears(model: nn.Module, *, batch_hint: int) -> int:
    """Swap every nn.Linear of `model` for a PackedLinear; returns how many were swapped."""
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PackedLinear(linear, batch_hint=batch_hint))
    return len(targets)


def check_packed_matches(model_linear: nn.Linear, packed: PackedLinear) -> bool:
    """One-off self-check used at load: the packed GEMM must reproduce F.linear."""
    x = torch.randn(4, model_linear.in_features, dtype=model_linear.weight.dtype)
    return bool(torch.equal(packed(x), F.linear(x, model_linear.weight, model_linear.bias)))
