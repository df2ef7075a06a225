"""The Triton quantised-linear kernels against de-quantise-then-matmul, on CPU via TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest
import torch

from ragsvc.serving.layers.quant import quantise, reference_linear

from .triton_interpreter import use_interpreter

_LATE = use_interpreter()  # before triton is imported: without a GPU the kernels run interpreted

triton = pytest.importorskip("triton", reason="triton is not installed (the `gpu` extra)")


@pytest.fixture
def kernel_module():
    if _LATE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set; run this file on its own")
    import ragsvc.serving.layers.triton_quant as module

    return module


@pytest.mark.parametrize("fmt", ["int8", "q4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_dequantise_then_matmul(kernel_module, fmt, dtype) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    # K off the block; M and N off the tiles; K long enough to be split in slices (evenly and not); more tokens
    # than EXPAND_TOKENS (de-quantise, then one GEMM)
    for tokens, k, n in [(1, 33, 5), (17, 100, 40), (3, 64, 33), (5, 300, 70), (2, 1000, 20), (70, 100, 40)]:
        w, bias = torch.randn((n, k), generator=g), torch.randn(n, generator=g)
        x = torch.randn((tokens, k), generator=g).to(dtype)
        qw = quantise(w, fmt)
        ref = reference_linear(x, qw, bias)
        got = kernel_module.linear(x.to(device), qw.to(torch.device(device)), bias.to(device)).cpu()
        scale = ref.float().abs().max().item()
        tol = 1e-4 if dtype == torch.float32 else 8e-3
        assert (got.float() - ref.float()).abs().max().item() <= tol * scale
