"""Triton kernel for the quantised linears on a GPU: the same packed formats as the CPU kernel (quant.py),
expanded in registers tile by tile, fp32 accumulation through tl.dot.

One program computes a (BLOCK_M tokens, BLOCK_N outputs) tile and walks K one 64-weight group at a time: q4
reads the group's 32 bytes per row, splits them into the low (first 32 weights) and high (next 32) nibbles and
scales each half by its block's fp16 scale and offset; int8 reads 32 weights per step and applies the
per-channel scale once at the end. Products and sums in fp32; q4 takes its activations in bf16 (rounded before
the launch, as the CPU kernel rounds them), so both devices compute the same sums.

Checked on CPU with TRITON_INTERPRET=1 (tests/serving/test_triton_quant.py); not measured on a GPU yet.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ragsvc.serving.layers.quant import QuantWeight

BLOCK_M, BLOCK_N = 16, 32


@triton.jit
def _q4_kernel(x_ptr, data_ptr, d_ptr, m_ptr, bias_ptr, out_ptr, M, N, K, KP, HAS_BIAS: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)  # (BM,) token rows
    rn = pid_n * BN + tl.arange(0, BN)  # (BN,) output channels
    j = tl.arange(0, 32)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    nb = KP // 32
    for g in range(0, KP // 64):
        byte = tl.load(data_ptr + rn[:, None] * (KP // 2) + 32 * g + j[None, :], mask=rn[:, None] < N, other=0)
        lo = (byte & 0xF).to(tl.float32)  # (BN, 32) weights 64g + j
        hi = (byte >> 4).to(tl.float32)  # (BN, 32) weights 64g + 32 + j
        da = tl.load(d_ptr + rn * nb + 2 * g, mask=rn < N, other=0.0).to(tl.float32)
        ma = tl.load(m_ptr + rn * nb + 2 * g, mask=rn < N, other=0.0).to(tl.float32)
        db = tl.load(d_ptr + rn * nb + 2 * g + 1, mask=rn < N, other=0.0).to(tl.float32)
        mb = tl.load(m_ptr + rn * nb + 2 * g + 1, mask=rn < N, other=0.0).to(tl.float32)
        wa = lo * da[:, None] + ma[:, None]  # (BN, 32)
        wb = hi * db[:, None] + mb[:, None]
        ka, kb = 64 * g + j, 64 * g + 32 + j
        xa = tl.load(x_ptr + rm[:, None] * K + ka[None, :], mask=(rm[:, None] < M) & (ka[None, :] < K), other=0.0)
        xb = tl.load(x_ptr + rm[:, None] * K + kb[None, :], mask=(rm[:, None] < M) & (kb[None, :] < K), other=0.0)
        acc += tl.dot(xa.to(tl.float32), tl.trans(wa), input_precision="ieee")  # (BM, BN)
        acc += tl.dot(xb.to(tl.float32), tl.trans(wb), input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _i8_kernel(x_ptr, data_ptr, scale_ptr, bias_ptr, out_ptr, M, N, K, KP, HAS_BIAS: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    j = tl.arange(0, 32)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, KP, 32):
        k = k0 + j
        w = tl.load(data_ptr + rn[:, None] * KP + k[None, :], mask=rn[:, None] < N, other=0).to(tl.float32)
        x = tl.load(x_ptr + rm[:, None] * K + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)
        acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision="ieee")  # (BM, BN)
    acc *= tl.load(scale_ptr + rn, mask=rn < N, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


def linear(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) -> (tokens, out) in x's dtype; all tensors on x's device."""
    x = x.contiguous()
    m, k = x.shape
    n = qw.out_features
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)  # (tokens, out)
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N))
    has_bias = bias is not None
    bias_arg = bias if bias is not None else out
    if qw.fmt == "q4":
        assert qw.offset is not None
        xq = x.to(torch.bfloat16)  # rounded here: the interpreter's in-kernel cast truncates
        _q4_kernel[grid](xq, qw.data, qw.scale, qw.offset, bias_arg, out, m, n, k, qw.padded_in,
                         HAS_BIAS=has_bias, BM=BLOCK_M, BN=BLOCK_N)
    else:
        _i8_kernel[grid](x, qw.data, qw.scale, bias_arg, out, m, n, k, qw.padded_in,
                         HAS_BIAS=has_bias, BM=BLOCK_M, BN=BLOCK_N)
    return out
