"""C++ kernels for weight-only quantised linears (int8 per channel, q4 blocks; formats in quant.py).

Why a kernel: de-quantising a weight to bf16 and calling a GEMM writes and re-reads the full-width weight,
which is exactly the memory traffic quantisation saves. The kernels expand the packed bytes in registers (one
token) or into a cache-resident panel (a few tokens to a few hundred), so a decode step reads them once.

- q4 (AVX512_BF16), one token at a time (decode at batch 1, and fp32 models, the exactness reference): a
  32-block of bytes expands to bf16 with one in-lane byte unpack against 0x43 (q + 128 is the bf16 bit
  pattern 0x43qq; the extra 128 * sum(x) per block is subtracted at the end), two vdpbf16ps and one FMA with
  the block's scale per 32 weights, fp32 sums; the activations are permuted once to the unpack's order.
  Activations are rounded to bf16 first (fp32 models included).
- q4, bf16 activations and 2+ tokens (decode batches, short prefill chunks): a panel GEMM. Each thread expands
  a panel of weight rows to bf16 (d * q + m rounded once, the weights expand_linear's GEMM multiplies) into a
  buffer that stays in L2, then multiplies it with every token in 4-row x 6-token register blocks. The weight
  is read once per call and expanded once, where re-expanding it per token tile cost more than the products.
- int8 (AVX-512F, or AVX2 and FMA): int8 -> fp32 in registers and FMAs with fp32 activations.
- Both split output channels across OpenMP threads; without those extensions a scalar loop computes the same
  sums. The q4 kernels have no AVX2 form: without AVX512_BF16 every q4 step takes the int8-activation kernel
  (cpu_q4_vnni.py, vpmaddubsw on AVX2), as the plan in cpu_tuning.py decides.

Long prefill chunks go the other way: once a step has more tokens than `prefill_tokens`, expanding the weight
once and calling oneDNN's GEMM beats the panel GEMM (`expand_linear`). The expansion
goes into one scratch buffer kept per thread and reused by every layer, so a step does not allocate, and
page-fault in, a fresh full-width copy of every weight of every layer. Only a weight larger than
EXPAND_TILE_BYTES (an LM head) is expanded a tile of rows at a time: oneDNN's GEMM is at its best on whole
projections, not on cache-sized slices of one. The token tile and the threshold come from `cpu_tuning`,
measured on the CPU at hand.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from typing import Any

import torch
import torch.nn.functional as F

from ragsvc.serving.layers.cpu_build import load_library
from ragsvc.serving.layers.quant import QuantWeight

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES: dict[str, list[Any]] = {
    **{f"q4_linear_{s}": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P, _I] for s in ("f32", "bf16")},
    **{f"i8_linear_{s}": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _I] for s in ("f32", "bf16")},
    **{f"q4_dequant_{s}": [_P, _P, _P, _I, _I, _I, _P] for s in ("f32", "bf16")},
    **{f"i8_dequant_{s}": [_P, _P, _I, _I, _I, _P] for s in ("f32", "bf16")},
    "q4_vectorised": [_P],
}
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
TILES = (1, 2, 4, 8)
"""Token tiles the int8 kernel is compiled for; for q4, tile 1 is one token at a time and any larger tile the
panel GEMM (bf16 activations)."""
EXPAND_TILE_BYTES = 64 << 20
"""Most bytes of expanded weight per GEMM call in `expand_linear` (and so the scratch buffer's size): whole
projections of 1-2B models fit, an LM head over a large vocabulary is split."""
_scratch = threading.local()


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use, then cached on disk); None when they cannot be built."""
    return load_library("quant", "cpu_quant.cpp", _SIGNATURES)


def q4_vectorised(lib: ctypes.CDLL) -> bool:
    """Whether the q4 kernels were built with their vector form (AVX512_BF16); without it they are scalar loops."""
    flag = ctypes.c_int64(0)
    lib.q4_vectorised(ctypes.byref(flag))
    return flag.value == 1


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _SUFFIX


def linear(lib: ctypes.CDLL, x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None, *, tile: int) -> torch.Tensor:
    """x: (tokens, in) fp32 or bf16 -> (tokens, out) in x's dtype. `bias` is fp32 (out,) or None."""
    if tile not in TILES:
        raise ValueError(f"token tile {tile} is not compiled; use one of {TILES}")
    x = x.contiguous()
    m, k = x.shape
    if k != qw.in_features:
        raise ValueError(f"input has {k} features, the weight expects {qw.in_features}")
    out = torch.empty((m, qw.out_features), dtype=x.dtype)  # (tokens, out)
    if m == 0:
        return out
    bias_ptr = None if bias is None else bias.data_ptr()
    sfx = _SUFFIX[x.dtype]
    if qw.fmt == "q4":
        assert qw.offset is not None
        getattr(lib, f"q4_linear_{sfx}")(x.data_ptr(), m, k, qw.padded_in, qw.out_features, qw.data.data_ptr(),
                                qw.scale.data_ptr(), qw.offset.data_ptr(), bias_ptr, out.data_ptr(), tile)
    else:
        getattr(lib, f"i8_linear_{sfx}")(x.data_ptr(), m, k, qw.padded_in, qw.out_features, qw.data.data_ptr(),
                                qw.scale.data_ptr(), bias_ptr, out.data_ptr(), tile)
    return out


def dequantise(lib: ctypes.CDLL, qw: QuantWeight, dtype: torch.dtype) -> torch.Tensor:
    """The full weight (out, in) in `dtype`, expanded by the kernel (the fast form of quant.dequantise)."""
    out = torch.empty((qw.out_features, qw.in_features), dtype=dtype)  # (out, in)
    sfx = _SUFFIX[dtype]
    n, k, kp = qw.out_features, qw.in_features, qw.padded_in
    if qw.fmt == "q4":
        assert qw.offset is not None
        getattr(lib, f"q4_dequant_{sfx}")(qw.data.data_ptr(), qw.scale.data_ptr(), qw.offset.data_ptr(), n, k, kp,
                                 out.data_ptr())
    else:
        getattr(lib, f"i8_dequant_{sfx}")(qw.data.data_ptr(), qw.scale.data_ptr(), n, k, kp, out.data_ptr())
    return out


def _scratch_buffer(elements: int, dtype: torch.dtype) -> torch.Tensor:
    """This thread's expansion buffer for `dtype`, grown when too small (a flat tensor of >= `elements`)."""
    key = f"buf_{_SUFFIX[dtype]}"
    buf = getattr(_scratch, key, None)
    if buf is None or buf.numel() < elements:
        buf = torch.empty(elements, dtype=dtype)
        setattr(_scratch, key, buf)
    return buf


def _dequantise_rows(lib: ctypes.CDLL, qw: QuantWeight, first: int, rows: int, out: torch.Tensor) -> None:
    """Rows [first, first + rows) of the weight, expanded by the kernel into `out` (rows, in), contiguous."""
    k, kp = qw.in_features, qw.padded_in
    sfx = _SUFFIX[out.dtype]
    if qw.fmt == "q4":
        assert qw.offset is not None
        scales = first * (kp // 32) * qw.scale.element_size()  # byte offset of the first row's scales
        getattr(lib, f"q4_dequant_{sfx}")(qw.data.data_ptr() + first * (kp // 2), qw.scale.data_ptr() + scales,
                                          qw.offset.data_ptr() + scales, rows, k, kp, out.data_ptr())
    else:
        getattr(lib, f"i8_dequant_{sfx}")(qw.data.data_ptr() + first * kp, qw.scale.data_ptr() + first * 4, rows, k, kp,
                                          out.data_ptr())


def expand_linear(lib: ctypes.CDLL, x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) fp32 or bf16 -> (tokens, out) in x's dtype, by GEMMs over expanded tiles of weight rows.
    q4 multiplies bf16-rounded activations, as the fused kernel does. `bias` in x's dtype, or None."""
    if qw.fmt == "q4" and x.dtype == torch.float32:
        x = x.to(torch.bfloat16).float()
    x = x.contiguous()
    n, k = qw.out_features, qw.in_features
    rows = max(16, min(n, EXPAND_TILE_BYTES // (k * x.element_size())))
    flat = _scratch_buffer(rows * k, x.dtype)
    if rows == n:  # one tile: the GEMM writes the output itself
        weight = flat[: n * k].view(n, k)  # (out, in)
        _dequantise_rows(lib, qw, 0, n, weight)
        return F.linear(x, weight, bias)
    out = torch.empty((x.shape[0], n), dtype=x.dtype)  # (tokens, out)
    for first in range(0, n, rows):
        count = min(rows, n - first)
        tile = flat[: count * k].view(count, k)  # (rows, in)
        _dequantise_rows(lib, qw, first, count, tile)
        # x @ tile^T is oneDNN's fast layout; the bias joins its float32 sums, as in one F.linear
        part = F.linear(x, tile, None if bias is None else bias[first:first + count])  # (tokens, rows)
        out[:, first:first + count] = part
    return out
