"""Linear layers with oneDNN pre-packed weights for the CPU bf16 path.

F.linear on CPU re-lays-out the weight for oneDNN on every call; packing it once (what torch.compile's
freezing pass does) takes that work out of every call, a large share of the small GEMMs of a decode step,
and is bit-identical in bf16. fp32 keeps plain F.linear: packed fp32 GEMMs round differently (~1e-4) and
fp32 is our exactness path against HF.

Few-token calls (decode steps) may instead take cpu_gemm_bf16's kernel, where the per-CPU plan
(cpu_gemm_plan.py) measured it faster for that shape and token count: `use_small_gemm` hands each packed linear
the kernel, its own copy of the weight in the kernel's layout, and its row of the plan. Many-token calls (prompt
chunks) may instead widen to fp32 (cpu_wide_gemm.py) where that plan measured the CPU's bf16 GEMM slower than
its fp32 one: `use_wide_gemm` keeps those linears' plain weights to widen from. oneDNN's calls run over row
counts rounded up (`gemm_rows`), so prompt chunks and mixed steps of every length reuse a few built kernels.
"""

from __future__ import annotations

import ctypes
import logging
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ragsvc import bf16_packing
from ragsvc.gemm_rows import bucketed
from ragsvc.serving.layers import cpu_gemm_bf16
from ragsvc.serving.layers.cpu_gemm_plan import ONEDNN, GemmPlan
from ragsvc.serving.layers.cpu_wide_gemm import WidePlan, widened_linear

logger = logging.getLogger(__name__)


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, *, batch_hint: int) -> None:
        super().__init__()
        self.in_features: int = linear.in_features
        self.out_features: int = linear.out_features
        weight = linear.weight.detach()  # (out, in)
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False)
        self.weight: torch.Tensor | None = weight
        """The (out, in) weight (shared with the model, no copy): kept where calls widen to fp32 from it
        (`use_wide_gemm`), else dropped once `use_small_gemm` has packed it or not."""
        self.small: tuple[ctypes.CDLL, cpu_gemm_bf16.PackedWeight, GemmPlan] | None = None
        """cpu_gemm_bf16's kernel, this weight in its layout and the plan, when the plan picks it for some token
        counts of this shape (`use_small_gemm`); None: oneDNN for every call."""
        self.wide_from: dict[int, int] = {}
        """threads -> the token count from which a call on that many threads widens to fp32 (`use_wide_gemm`);
        empty: never (the plain weight is then dropped by `use_small_gemm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (tokens, in) -> (tokens, out)
        if self.small is not None and x.dim() == 2:
            lib, weight, plan = self.small
            threads, fma = plan.kernel(self.in_features, self.out_features, x.shape[0])
            if threads != ONEDNN:  # never more than this thread's own (a half of a split step runs on fewer)
                return cpu_gemm_bf16.linear(lib, x, weight, threads=min(threads, torch.get_num_threads()), fma=fma)
        if self.wide_from and x.dim() == 2 and self.weight is not None:
            start = self.wide_from.get(torch.get_num_threads())
            if start is not None and x.shape[0] >= start:
                bias = self.bias
                return widened_linear(x, self.weight, bias if isinstance(bias, torch.Tensor) else None)
        return bucketed(x, cast(torch.Tensor, self.packed), cast("torch.Tensor | None", self.bias), True)


def use_small_gemm(model: nn.Module, lib: ctypes.CDLL | None, plan: GemmPlan | None) -> int:
    """Give the bias-free packed linears of `model` the small-GEMM kernel where `plan` picks it for their shape
    (None: oneDNN for all), once: each then drops its plain weight unless it widens (`use_wide_gemm`); returns
    how many took the kernel.

    The kernel's copies of the weights share one buffer: hundreds of megabytes in separate tensors of a few
    megabytes each would sit in glibc's heap for good, and the heap then handed a prompt step's freed
    activations back to the kernel instead of keeping them (measured: many times the page faults per run)."""
    chosen: list[tuple[PackedLinear, torch.Tensor]] = []
    for module in model.modules():
        if not isinstance(module, PackedLinear):
            continue
        weight = module.weight
        if not module.wide_from:
            module.weight = None
        if lib is None or plan is None or module.bias is not None or weight is None:
            continue
        if plan.uses_kernel(module.in_features, module.out_features):
            chosen.append((module, weight))
    if lib is None or plan is None or not chosen:
        return 0
    sizes = [cpu_gemm_bf16.packed_numel(m.out_features, m.in_features) for m, _ in chosen]
    arena = torch.empty(sum(sizes), dtype=torch.bfloat16)
    for (module, weight), part in zip(chosen, arena.split(sizes), strict=True):
        module.small = (lib, cpu_gemm_bf16.pack(lib, weight, part), plan)
    return len(chosen)


def use_wide_gemm(model: nn.Module, plan: WidePlan | None) -> int:
    """Let the packed linears of `model` widen many-token calls to fp32 where `plan` found it faster for their
    shape (None: never); call before `use_small_gemm`, which keeps the plain weights of those. Returns how many
    linears widen for some thread count."""
    count = 0
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.wide_from = {} if plan is None else plan.start(module.in_features, module.out_features)
            count += bool(module.wide_from)
    return count


def packed_shapes(model: nn.Module, *, with_bias: bool = False) -> list[tuple[int, int]]:
    """(in, out) of the model's bias-free packed linears (the shapes a small-GEMM plan is measured for), or of all
    of them with `with_bias` (a wide-GEMM plan's)."""
    shapes: set[tuple[int, int]] = set()
    for m in model.modules():
        if isinstance(m, PackedLinear) and (with_bias or m.bias is None):
            shapes.add((m.in_features, m.out_features))
    return sorted(shapes)


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether linears of `dtype` on `device` are packed: bf16 on a CPU whose oneDNN packs it (elsewhere, an
    AVX2-only Zen 3 say, bf16 linears stay on F.linear)."""
    return device.type == "cpu" and dtype == torch.bfloat16 and bf16_packing.refusal() is None


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
