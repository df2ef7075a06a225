"""Triton kernels for the quantised linears on a GPU: the same packed formats as the CPU kernels (quant.py),
expanded in registers, with the same sums.

Decode steps (up to EXPAND_TOKENS tokens) stream the packed weight once. The weight's integers go to the
tensor cores as bf16 — exact, since 0..15 and -127..127 fit bf16's 8-bit mantissa — against bf16
activations, so every product is exact and sums are fp32, as on the CPU; the scales are applied after the
dot. For q4 the 32-block's affine form is factored out of the sum:
    sum_k x_k (d q_k + m) = d * sum_k x_k q_k + m * sum_k x_k,
one dot and one row sum per block. One program computes a (BM tokens, BN outputs) tile over a slice of K;
a matrix with too few output tiles to fill the GPU (a 1.5B model's attention projections have 32 tiles of
64 on 132 multiprocessors) is split along K too, the slices' fp32 partial sums added afterwards in a fixed
order (no atomics, so a step's logits are the same on every run).

float32 activations with int8 weights keep full fp32 products (tensor cores would round them to bf16): the same
kernel multiplies them in fp32, the engine's float32 exactness path.

Longer steps (prefill chunks) de-quantise the weight and run one cuBLAS GEMM, which re-reads nothing per
token tile; the weight is rounded to the activations' dtype there, as the CPU's expansion path does.

Checked on CPU with TRITON_INTERPRET=1 (tests/serving/test_triton_quant.py) and on an H200
(eval/baselines/gpu-h200.md has the figures and how they were taken).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ragsvc.serving.layers.quant import QuantWeight, dequantise

BM, BN = 16, 64
"""Tile of the decode kernels: 16 token rows (tl.dot's smallest) by 64 output channels."""
EXPAND_TOKENS = 64
"""Steps of more tokens de-quantise the weight and run one GEMM instead of re-reading it per token tile."""
MIN_GROUPS_PER_SPLIT = 2
"""A K slice holds at least this many 64-weight groups, so a program streams at least 4 KiB of a q4 weight."""


@triton.jit
def _dot(a, b, BF16_DOT: tl.constexpr):
    """a (M, K) activations @ b (K, N) small integers (as fp32), fp32 sums. BF16_DOT: on the tensor cores in bf16,
    exact for bf16 activations. Otherwise in full fp32: float32 activations (the engine's float32 exactness
    path), and Triton's interpreter, whose bf16 dot multiplies raw bit patterns."""
    if BF16_DOT:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        return tl.dot(a.to(tl.float32), b, input_precision="ieee")


@triton.jit
def _store(out_ptr, bias_ptr, acc, rm, rn, pid_k, M, N, HAS_BIAS: tl.constexpr, ONE_SLICE: tl.constexpr):
    """One K slice: the finished tile (bias added, in the output's dtype), one launch in all. Several: this
    slice's fp32 partial sums, in its own plane of the (slices, M, N) output."""
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if ONE_SLICE:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + pid_k * M * N + rm[:, None] * N + rn[None, :], acc, mask=mask)


@triton.jit
def _q4_kernel(x_ptr, data_ptr, d_ptr, m_ptr, bias_ptr, out_ptr, M, N, K, KP, GROUPS_PER_SPLIT,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BF16_DOT: tl.constexpr,
               HAS_BIAS: tl.constexpr, ONE_SLICE: tl.constexpr):
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) token rows
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) output channels
    j = tl.arange(0, 32)
    m_ok, n_ok = rm < M, rn < N
    nb = KP // 32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    g0 = pid_k * GROUPS_PER_SPLIT
    g1 = tl.minimum(g0 + GROUPS_PER_SPLIT, KP // 64)
    for g in range(g0, g1):
        byte = tl.load(data_ptr + rn[:, None] * (KP // 2) + 32 * g + j[None, :], mask=n_ok[:, None], other=0)
        lo = (byte & 0xF).to(tl.float32)  # (BN, 32) q of weights 64g + j
        hi = (byte >> 4).to(tl.float32)  # (BN, 32) q of weights 64g + 32 + j
        ka, kb = 64 * g + j, 64 * g + 32 + j
        xa = tl.load(x_ptr + rm[:, None] * K + ka[None, :], mask=m_ok[:, None] & (ka[None, :] < K), other=0.0)
        xb = tl.load(x_ptr + rm[:, None] * K + kb[None, :], mask=m_ok[:, None] & (kb[None, :] < K), other=0.0)
        da = tl.load(d_ptr + rn * nb + 2 * g, mask=n_ok, other=0.0).to(tl.float32)
        ma = tl.load(m_ptr + rn * nb + 2 * g, mask=n_ok, other=0.0).to(tl.float32)
        db = tl.load(d_ptr + rn * nb + 2 * g + 1, mask=n_ok, other=0.0).to(tl.float32)
        mb = tl.load(m_ptr + rn * nb + 2 * g + 1, mask=n_ok, other=0.0).to(tl.float32)
        sa = tl.sum(xa.to(tl.float32), axis=1)  # (BM,) sum of the block's activations
        sb = tl.sum(xb.to(tl.float32), axis=1)
        acc += _dot(xa, tl.trans(lo), BF16_DOT) * da[None, :] + sa[:, None] * ma[None, :]  # (BM, BN)
        acc += _dot(xb, tl.trans(hi), BF16_DOT) * db[None, :] + sb[:, None] * mb[None, :]
    _store(out_ptr, bias_ptr, acc, rm, rn, pid_k, M, N, HAS_BIAS, ONE_SLICE)


@triton.jit
def _i8_kernel(x_ptr, data_ptr, scale_ptr, bias_ptr, out_ptr, M, N, K, KP, GROUPS_PER_SPLIT,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BF16_DOT: tl.constexpr,
               HAS_BIAS: tl.constexpr, ONE_SLICE: tl.constexpr):
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, 64)
    m_ok, n_ok = rm < M, rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    g0 = pid_k * GROUPS_PER_SPLIT
    g1 = tl.minimum(g0 + GROUPS_PER_SPLIT, KP // 64)
    for g in range(g0, g1):
        k = 64 * g + j
        w = tl.load(data_ptr + rn[:, None] * KP + k[None, :], mask=n_ok[:, None], other=0).to(tl.float32)
        x = tl.load(x_ptr + rm[:, None] * K + k[None, :], mask=m_ok[:, None] & (k[None, :] < K), other=0.0)
        acc += _dot(x, tl.trans(w), BF16_DOT)  # (BM, BN)
    acc *= tl.load(scale_ptr + rn, mask=n_ok, other=0.0)[None, :]
    _store(out_ptr, bias_ptr, acc, rm, rn, pid_k, M, N, HAS_BIAS, ONE_SLICE)


_SMS: dict[int, int] = {}


def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: any small number exercises the split
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def splits(n_tiles: int, m_tiles: int, groups: int, multiprocessors: int) -> tuple[int, int]:
    """(K slices, groups per slice): enough programs for two per multiprocessor, each slice at least
    MIN_GROUPS_PER_SPLIT groups long; one slice when the output tiles already fill the GPU."""
    want = max(1, -(-2 * multiprocessors // (n_tiles * m_tiles)))
    most = max(1, groups // MIN_GROUPS_PER_SPLIT)
    per = -(-groups // min(want, most))
    return -(-groups // per), per


def linear(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) -> (tokens, out) in x's dtype; all tensors on x's device."""
    m, k = x.shape
    if m > EXPAND_TOKENS:
        return _expanded(x, qw, bias)
    n = qw.out_features
    if qw.fmt == "q4":
        xk = x.to(torch.bfloat16).contiguous()  # the CPU kernels round q4's activations to bf16 too
    else:
        xk = (x if x.dtype == torch.bfloat16 else x.float()).contiguous()
    n_tiles, m_tiles = triton.cdiv(n, BN), triton.cdiv(m, BM)
    num_splits, per = splits(n_tiles, m_tiles, qw.padded_in // 64, _multiprocessors(x.device))
    one = num_splits == 1
    out = torch.empty((num_splits, m, n) if not one else (m, n), dtype=torch.float32 if not one else x.dtype,
                      device=x.device)  # (tokens, out), or each slice's (tokens, out) partial sums
    grid = (n_tiles, num_splits, m_tiles)
    has_bias = bias is not None and one
    bf16_dot = x.device.type == "cuda" and xk.dtype == torch.bfloat16
    flags = dict(BLOCK_M=BM, BLOCK_N=BN, BF16_DOT=bf16_dot, HAS_BIAS=has_bias, ONE_SLICE=one)
    bias_arg = bias if bias is not None else out
    if qw.fmt == "q4":
        assert qw.offset is not None
        _q4_kernel[grid](xk, qw.data, qw.scale, qw.offset, bias_arg, out, m, n, k, qw.padded_in, per, **flags)
    else:
        _i8_kernel[grid](xk, qw.data, qw.scale, bias_arg, out, m, n, k, qw.padded_in, per, **flags)
    if one:
        return out
    y = out.sum(dim=0)  # (tokens, out) fp32, the slices in order
    if bias is not None:
        y += bias.float()
    return y.to(x.dtype)


def _expanded(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """De-quantise, then one GEMM in the activations' dtype (q4's activations rounded to bf16 first)."""
    w = dequantise(qw)  # (out, in) fp32
    xs = x.to(torch.bfloat16).to(x.dtype) if qw.fmt == "q4" else x
    return F.linear(xs, w.to(x.dtype), None if bias is None else bias.to(x.dtype))
