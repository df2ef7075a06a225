"""QuantLinear: a linear layer whose weight is int8 or q4 (quant.py), and the swap that installs it in a model.

The forward picks, per call: for q4 steps in the windows measured per CPU, the AMX kernel (cpu_q4_amx.py) or
the int8-activation kernel (cpu_q4_vnni.py), and for int8 steps of a few tokens that kernel's int8-weight form;
otherwise the fused C++ kernel for decode-sized steps (cpu_quant.py, blocking from cpu_tuning.py), expansion to
the activations' dtype in cache-sized row tiles plus GEMMs for long prefill chunks, the Triton kernel on CUDA,
and the plain-torch reference (quant.reference_linear) where none of these can run.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Protocol

import torch
from torch import nn

from ragsvc.serving.layers import cpu_q4_amx, cpu_q4_vnni, cpu_quant
from ragsvc.serving.layers.cpu_tuning import QuantPlan
from ragsvc.serving.layers.quant import QuantWeight, grid_error, quantise, reference_linear

logger = logging.getLogger(__name__)

ON_GRID = 0.1
"""A linear whose q4 round-off (quant.grid_error) is below this, in block steps, already sat on a 4-bit grid."""


class Quantiser(Protocol):
    """Where quantised weights come from: quantised on the spot, or the loader's cache (quant_cache.py)."""

    def __call__(self, name: str, weight: torch.Tensor, fmt: str) -> QuantWeight: ...

    def format_of(self, name: str) -> str | None:
        """The format `name` was given before (q4 or int8), or None when it was never decided."""
        ...

    def forget(self, name: str, fmt: str) -> None: ...


class FreshQuantiser:
    """Quantises every weight on the spot and remembers nothing."""

    def __call__(self, name: str, weight: torch.Tensor, fmt: str) -> QuantWeight:
        return quantise(weight, fmt)

    def format_of(self, name: str) -> str | None:
        return None

    def forget(self, name: str, fmt: str) -> None:
        return None


class QuantLinear(nn.Module):
    def __init__(self, qw: QuantWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.qw = qw
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.bias_ref: torch.Tensor | None = None if bias is None else bias.detach().clone()
        self.bias_f32 = None if bias is None else bias.detach().float().contiguous()
        self.kernels: ctypes.CDLL | None = None
        self.plan: QuantPlan | None = None
        self.vnni_weight: cpu_q4_vnni.VnniWeight | None = None
        """The weight in the int8-activation kernel's layout, packed on its first use."""
        self.i8_weight: cpu_q4_vnni.VnniInt8Weight | None = None
        """An int8 weight in that kernel's int8-weight layout, packed on its first use."""

    def use_kernels(self, kernels: ctypes.CDLL | None, plan: QuantPlan | None) -> None:
        """Take these kernels and plan. Where the plan gives one-token steps to the int8-activation kernel, the
        weight is packed for it now (decode certainly takes it), so the first request does not wait for every
        linear's packing (about half a second for a 1.5B model); other windows pack on first use."""
        self.kernels, self.plan = kernels, plan
        if kernels is None or plan is None:
            return
        if self.qw.fmt == "q4" and plan.takes_vnni(1) and plan.amx_tokens != 1 and self.vnni_weight is None:
            vnni = cpu_q4_vnni.load()
            if vnni is not None:
                self.vnni_weight = cpu_q4_vnni.pack(vnni, self.qw)
        if self.qw.fmt == "int8" and plan.takes_i8(1) and self.i8_weight is None:
            vnni = cpu_q4_vnni.load()
            if vnni is not None:
                self.i8_weight = cpu_q4_vnni.pack_int8(vnni, self.qw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (tokens, in) -> (tokens, out)
        lib, plan = self.kernels, self.plan
        if lib is not None and plan is not None and cpu_quant.supports(x):
            tokens = x.shape[0]
            if 0 < plan.amx_tokens <= tokens and self.qw.fmt == "q4":
                amx = cpu_q4_amx.load()
                if amx is not None:
                    return cpu_q4_amx.linear(amx, x, self.qw, self.bias_f32)
            if plan.takes_vnni(tokens) and self.qw.fmt == "q4":
                vnni = cpu_q4_vnni.load()
                if vnni is not None:
                    if self.vnni_weight is None:
                        self.vnni_weight = cpu_q4_vnni.pack(vnni, self.qw)
                    return cpu_q4_vnni.linear(vnni, x, self.vnni_weight, self.bias_f32)
            if plan.takes_i8(tokens) and self.qw.fmt == "int8":
                vnni = cpu_q4_vnni.load()
                if vnni is not None:
                    if self.i8_weight is None:
                        self.i8_weight = cpu_q4_vnni.pack_int8(vnni, self.qw)
                    return cpu_q4_vnni.linear_int8(vnni, x, self.i8_weight, self.bias_f32)
            if tokens > plan.prefill_tokens:
                bias = None if self.bias_ref is None else self.bias_ref.to(x.dtype)
                return cpu_quant.expand_linear(lib, x, self.qw, bias)
            tile = max(t for t in cpu_quant.TILES if t <= max(1, min(tokens, plan.tile)))
            return cpu_quant.linear(lib, x, self.qw, self.bias_f32, tile=tile)
        if x.device.type == "cuda":
            from ragsvc.serving.layers import triton_quant

            return triton_quant.linear(x, self.qw, self.bias_ref)
        return reference_linear(x, self.qw, self.bias_ref)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weights={self.qw.fmt}"


ALL_Q4 = "q4-all"


def quant_targets(model: nn.Module, fmt: str) -> dict[str, str]:
    """Which linears get which format: every projection in `fmt`; the LM head in int8 for int8 and q4 (it is
    the widest matrix, read every step, and logits are where 4-bit error shows most: llama.cpp's Q4_K_M keeps
    it at 6 bits for the same reason). "q4-all" puts all of them in q4: ~40% fewer head bytes per step."""
    layer_fmt = "q4" if fmt == ALL_Q4 else fmt
    targets = {name: layer_fmt for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name != "lm_head"}
    if isinstance(getattr(model, "lm_head", None), nn.Linear):
        targets["lm_head"] = layer_fmt if fmt == ALL_Q4 else "int8"
    return targets


def keep_fine_weights(model: nn.Module, targets: dict[str, str], quantiser: Quantiser) -> dict[str, str]:
    """q4 targets -> q4 or int8. When most of them already sit on a 4-bit grid (the model came from a 4-bit
    GGUF such as Q4_K_M), the others are tensors the GGUF kept at more bits (Q6_K, Q8_0: llama.cpp's choice of
    the layers that suffer most from 4 bits), and they stay near their precision in int8 instead of losing it
    to a second 4-bit rounding. A model from float weights has few on the grid, and all of it becomes q4.
    Decisions already made (the cache holds that linear in one format) are kept."""
    q4 = [n for n, f in targets.items() if f == "q4"]
    out = dict(targets)
    todo = []
    for name in q4:
        known = quantiser.format_of(name)
        if known is None:
            todo.append(name)
        else:
            out[name] = known
    if not todo:
        return out
    on_grid = {}
    for name in todo:
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        weight = linear.weight.detach()
        on_grid[name] = grid_error(weight, quantiser(name, weight, "q4")) < ON_GRID
    mostly_4bit = sum(on_grid.values()) * 2 >= len(on_grid)
    for name, fits in on_grid.items():
        if mostly_4bit and not fits:
            out[name] = "int8"
            quantiser.forget(name, "q4")
    logger.info("q4: %d linears on a 4-bit grid, %d kept at int8", sum(on_grid.values()),
                sum(1 for n in todo if out[n] == "int8"))
    return out


def quantise_linears(model: nn.Module, fmt: str, *, quantiser: Quantiser | None = None) -> int:
    """Swap the model's linears for QuantLinears in `fmt` ("int8" / "q4" / "q4-all"); returns how many were
    swapped.

    `quantiser` defaults to quantising on the spot; the loader passes its cache. For q4, `keep_fine_weights`
    picks which linears stay int8; q4-all keeps none."""
    quantiser = quantiser or FreshQuantiser()
    targets = quant_targets(model, fmt)
    if fmt == "q4":
        targets = keep_fine_weights(model, targets, quantiser)
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


def linear_bytes(model: nn.Module, *, element_size: int) -> int:
    """Bytes of every linear weight a decode step streams: packed bytes of QuantLinears (with their scales),
    in x out x `element_size` for the float ones (plain or oneDNN-packed)."""
    total = 0
    for module in model.modules():
        in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if isinstance(module, QuantLinear):
            total += module.qw.nbytes()
        elif isinstance(in_features, int) and isinstance(out_features, int):
            total += in_features * out_features * element_size
    return total
