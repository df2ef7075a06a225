"""Linear layers with oneDNN pre-packed weights for the CPU bf16 path.

F.linear on CPU re-lays-out the weight for oneDNN on every call; packing it once (what torch.compile's
freezing pass does) takes that work out of every call, a large share of the small GEMMs of a decode step,
and is bit-identical in bf16. fp32 keeps plain F.linear: packed fp32 GEMMs round differently (~1e-4) and
fp32 is our exactness path against HF.
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
    return (
        device.type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def pack_linears(model: nn.Module, *, batch_hint: int) -> int:
    """Swap every nn.Linear of `model` for a PackedLinear; returns how many were swapped.

    The first swap is checked against F.linear on a random input (bit-identical in bf16), so a torch build
    whose packed path misbehaves fails loudly at load instead of generating garbage.
    """
    targets = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    for i, (name, linear) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        packed = PackedLinear(linear, batch_hint=batch_hint)
        if i == 0:
            x = torch.randn(4, linear.in_features, dtype=linear.weight.dtype, device=linear.weight.device)
            if not torch.equal(packed(x), F.linear(x, linear.weight, linear.bias)):
                raise RuntimeError("oneDNN packed linear disagrees with F.linear; use dtype=float32 and report it")
        setattr(parent, attr, packed)
    return len(targets)
