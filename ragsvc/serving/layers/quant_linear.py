"""QuantLinear: a linear layer whose weight is int8 or q4 (quant.py), and the swap that installs it in a model.

The forward picks, per call: the fused C++ kernel for decode-sized steps (cpu_quant.py, blocking from
cpu_tuning.py), one expansion to the activations' dtype plus a GEMM for long prefill chunks, the Triton kernel
on CUDA, and the plain-torch reference (quant.reference_linear) where none of these can run.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ragsvc.serving.layers import cpu_quant
from ragsvc.serving.layers.cpu_tuning import QuantPlan
from ragsvc.serving.layers.quant import QuantWeight, quantise, reference_linear

logger = logging.getLogger(__name__)

Quantiser = Callable[[str, torch.Tensor, str], QuantWeight]
"""(module name, float weight, format) -> its quantised form; lets the loader serve packed weights from its
cache."""


class QuantLinear(nn.Module):
    def __init__(self, qw: QuantWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.qw = qw
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.bias_ref: torch.Tensor | None = None if bias is None else bias.detach().clone()
        self.bias_f32 = None if bias is None else bias.detach().float().contiguous()
        self.kernels: ctypes.CDLL | None = None
        self.plan: QuantPlan | None = None

    def use_kernels(self, kernels: ctypes.CDLL | None, plan: QuantPlan | None) -> None:
        self.kernels, self.plan = kernels, plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (tokens, in) -> (tokens, out)
        lib, plan = self.kernels, self.plan
        if lib is not None and plan is not None and cpu_quant.supports(x):
            tokens = x.shape[0]
            if tokens > plan.prefill_tokens:
                weight = cpu_quant.dequantise(lib, self.qw, x.dtype)  # (out, in), freed after the GEMM
                if self.qw.fmt == "q4" and x.dtype == torch.float32:
                    x = x.to(torch.bfloat16).float()  # q4 multiplies bf16 activations on every path
                return F.linear(x, weight, None if self.bias_ref is None else self.bias_ref.to(x.dtype))
            tile = max(t for t in cpu_quant.TILES if t <= max(1, min(tokens, plan.tile)))
            return cpu_quant.linear(lib, x, self.qw, self.bias_f32, tile=tile)
        if x.device.type == "cuda":
            from ragsvc.serving.layers import triton_quant

            return triton_quant.linear(x, self.qw, self.bias_ref)
        return reference_linear(x, self.qw, self.bias_ref)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weights={self.qw.fmt}"


def quant_targets(model: nn.Module, fmt: str) -> dict[str, str]:
    """Which linears get which format: every projection in `fmt`; the LM head in int8 for both formats (it is
    the widest matrix, read every step, and logits are where 4-bit error shows most: llama.cpp's Q4_K_M keeps
    it at 6 bits for the same reason)."""
    targets = {name: fmt for name, m in model.named_modules() if isinstance(m, nn.Linear) and name != "lm_head"}
    if isinstance(getattr(model, "lm_head", None), nn.Linear):
        targets["lm_head"] = "int8"
    return targets


def quantise_linears(model: nn.Module, fmt: str, *, quantiser: Quantiser | None = None) -> int:
    """Swap the model's linears for QuantLinears in `fmt` ("int8" / "q4"); returns how many were swapped.

    `quantiser` (name, weight) -> QuantWeight defaults to quantising in place; the loader passes one that reads
    its cache. The float weights are dropped as each layer is swapped, so peak memory grows by one layer."""
    quantiser = quantiser or (lambda _name, w, f: quantise(w, f))
    targets = quant_targets(model, fmt)
    for name, layer_fmt in targets.items():
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        weight = linear.weight.detach()
        qw = quantiser(name, weight, layer_fmt).to(weight.device)
        setattr(parent, attr, QuantLinear(qw, linear.bias))
    return len(targets)


def use_quant_kernels(model: nn.Module, kernels: ctypes.CDLL | None, plan: QuantPlan | None) -> None:
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.use_kernels(kernels, plan)
