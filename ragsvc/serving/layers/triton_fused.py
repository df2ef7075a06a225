"""Triton kernels for a decoder layer's elementwise work on a GPU: RMSNorm with its residual add, rotary on q and k
together, and SiLU(gate) * up, one launch each.

torch runs these as chains of small kernels (a bf16 RMSNorm with its residual is nine: add, cast, square, mean,
add eps, rsqrt, multiply, cast back, weight), each 1-3 us over a few kilobytes at decode. Inside a replayed CUDA
graph the launches cost little but the kernels still run one after another: on an H200 a 135M model's batch-1
decode step took 2.81 ms with them and 1.45 ms with these (eval/baselines/gpu-h200.md). Here each is one pass
over its rows.

Each kernel rounds where the torch code it replaces rounds (the layers' torch paths are the reference): the
residual sum and the normalised value are cast to the model's dtype before the weight multiplies them; rotary's
two products are rounded before they are added; SiLU's output before it multiplies `up`. In float32 that is
plain float32 arithmetic; sums over a row run in another order than torch's, so results agree to rounding, not
bit for bit.

Checked on CPU with TRITON_INTERPRET=1 (tests/serving/test_triton_fused.py) and on a GPU inside the engine
(tests/serving/test_cuda_engine.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, sum_ptr, x_stride, res_stride, n, eps,
                     HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    dtype = x.dtype
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(dtype)
        tl.store(sum_ptr + row * n + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    mean_square = tl.sum(x32 * x32, axis=0) / n
    normed = (x32 * (1.0 / tl.sqrt(mean_square + eps))).to(dtype)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    tl.store(out_ptr + row * n + cols, (w.to(tl.float32) * normed.to(tl.float32)).to(dtype), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x, residual: (tokens, hidden) -> (RMSNorm(x + residual) * weight, x + residual), or (RMSNorm(x) * weight,
    None) without a residual. Rows may be strided; the last dimension must be contiguous."""
    tokens, n = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    out = torch.empty((tokens, n), dtype=x.dtype, device=x.device)
    summed = torch.empty_like(out) if residual is not None else None
    if residual is not None and residual.stride(-1) != 1:
        residual = residual.contiguous()
    if tokens:
        _rms_norm_kernel[(tokens,)](
            x, residual if residual is not None else x, weight, out, summed if summed is not None else out,
            x.stride(0), residual.stride(0) if residual is not None else 0, n, eps,
            HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(n))
    return out, summed


@triton.jit
def _rotary_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, x_stride, head_stride, cos_stride, heads, head_dim,
                   BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    token = tl.program_id(0)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < heads) & (d < head_dim)
    half = head_dim // 2
    rolled = tl.where(d < half, d + half, d - half)  # x.roll(half): element d takes x[d - half mod head_dim]
    base = x_ptr + token * x_stride + h * head_stride
    x = tl.load(base + d, mask=mask, other=0.0)
    xr = tl.load(base + rolled, mask=mask, other=0.0)
    cos = tl.load(cos_ptr + token * cos_stride + d, mask=d < head_dim, other=0.0)
    sin = tl.load(sin_ptr + token * cos_stride + d, mask=d < head_dim, other=0.0)
    dtype = x.dtype
    a = (x.to(tl.float32) * cos.to(tl.float32)).to(dtype)
    b = (xr.to(tl.float32) * sin.to(tl.float32)).to(dtype)
    out = (a.to(tl.float32) + b.to(tl.float32)).to(dtype)
    tl.store(out_ptr + token * heads * head_dim + h * head_dim + d, out, mask=mask)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (tokens, heads, head_dim), its last dimension contiguous (a view into the fused q/k/v output);
    cos, sin: (tokens, 1, head_dim), `sin` with rotate_half's sign folded in (RotaryEmbedding) -> rotated x,
    contiguous, as layers.rotary.apply_rotary computes it."""
    tokens, heads, head_dim = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.reshape(tokens, head_dim), sin.reshape(tokens, head_dim)
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty((tokens, heads, head_dim), dtype=x.dtype, device=x.device)
    if tokens:
        _rotary_kernel[(tokens,)](x, cos, sin, out, x.stride(0), x.stride(1), cos.stride(0), heads, head_dim,
                                  BLOCK_H=triton.next_power_of_2(heads), BLOCK_D=triton.next_power_of_2(head_dim))
    return out


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, x_stride, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * x_stride + n + cols, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    silu = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    tl.store(out_ptr + row * n + cols, (silu.to(tl.float32) * up.to(tl.float32)).to(gate.dtype), mask=mask)


SILU_BLOCK = 1024
"""Outputs per program of the SiLU kernel: a 1.5B model's 8,960-wide MLP is 9 programs a token."""


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: (tokens, 2 * intermediate), gate first -> SiLU(gate) * up, (tokens, intermediate)."""
    tokens, width = gate_up.shape
    n = width // 2
    if gate_up.stride(-1) != 1:
        gate_up = gate_up.contiguous()
    out = torch.empty((tokens, n), dtype=gate_up.dtype, device=gate_up.device)
    if tokens:
        _silu_mul_kernel[(tokens, triton.cdiv(n, SILU_BLOCK))](gate_up, out, gate_up.stride(0), n, BLOCK=SILU_BLOCK)
    return out
