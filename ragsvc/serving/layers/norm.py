"""RMSNorm, computed in float32 like the reference implementation so fp32 logits match to 1e-3.

On CPU with `kernels` set (by the model runner) it runs as one fused pass (cpu_fused.py), on a GPU with
`gpu_kernels` set as one Triton kernel (triton_fused.py); the torch code below is both kernels' reference.
"""

from __future__ import annotations

import ctypes
from types import ModuleType

import torch
from torch import nn

from ragsvc.serving.layers import cpu_fused


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, *, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.kernels: ctypes.CDLL | None = None
        """The fused CPU kernels, or None for the torch path."""
        self.gpu_kernels: ModuleType | None = None
        """triton_fused on a GPU, or None for the torch path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (tokens, hidden)
        if self.kernels is not None and cpu_fused.supports(x):
            return cpu_fused.rms_norm(self.kernels, x, self.weight, self.eps)[0]
        if self.gpu_kernels is not None:
            return self.gpu_kernels.rms_norm(x, self.weight, self.eps)[0]
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def forward_residual(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the residual first (one fewer pass in the decoder layer); returns (normed, new residual)."""
        if self.kernels is not None and cpu_fused.supports(x):
            normed, summed = cpu_fused.rms_norm(self.kernels, x, self.weight, self.eps, residual)
            assert summed is not None  # returned whenever a residual is given
            return normed, summed
        if self.gpu_kernels is not None:
            return self.gpu_kernels.rms_norm(x, self.weight, self.eps, residual)
        residual = x + residual
        return self.forward(residual), residual
