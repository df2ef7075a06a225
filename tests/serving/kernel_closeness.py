"""Closeness of a kernel's output to its reference, relative to the largest reference value."""

from __future__ import annotations

import torch


def assert_close_to_largest(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """fp32: the sums run in another order; bf16: one rounding of the output, so a bf16 step of the largest
    value."""
    scale = ref.float().abs().max().item() + 1e-6
    tol = 1e-4 if dtype == torch.float32 else 8e-3
    err = (got.float() - ref.float()).abs().max().item() / scale
    assert err <= tol, f"max error {err:.2e} of the largest output > {tol}"
