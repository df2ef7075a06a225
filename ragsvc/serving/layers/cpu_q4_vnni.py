"""q4 weights x int8 activations on AVX512_VNNI or AVX2: the decode and prompt-reading kernel for q4 models
(where the CPU's plan measures it fastest), and on AVX2 CPUs their only vector q4 kernel.

Why: the bf16 paths (cpu_quant's GEMV and panel GEMM, or expanding the weight for oneDNN's GEMM) multiply 32
bf16 pairs per vdpbf16ps; vpdpbusd multiplies 64 byte pairs per instruction. So, like llama.cpp's Q4 x Q8 dot
products, the activations are rounded to int8 and the 4-bit weights are multiplied as bytes. Reading a prompt
is compute-bound, and so is one-token decode on CPUs whose vdpbf16ps is slow: on the AMX Xeon it issues once
per ~0.9 ns against ~0.23 ns for an FMA, and the bf16 GEMV read Qwen2.5-1.5B's q4 linears at 6-7 GB/s where
this kernel reads them at 12-13 (a decode step's linears 114-130 ms against 65-68).

Numerics (the Q4_1 x Q8_0 scheme): each token's 32-blocks get their own scale, x ~ sx * xq with
xq = round(x * 127 / max|x|) in -127..127 (a block-local scale keeps one outlier channel from flattening the
rest of the row); per block, sum(w * x) = d * sx * sum(q * xq) + m * sx * sum(xq), with the integer sum exact
in int32 and everything after it in fp32. The round-off against bf16 activations is at most half a step of
each block's own range; `reference_linear` is the plain-torch form the kernel is tested against, and the model-
level cost is measured like the weights' (greedy agreement and perplexity, `ragsvc bench quant-quality`).

Weights: the kernel reads its own layout (`pack`, 16 rows per vector, the same bytes as the q4 layout); a
`QuantLinear` packs its weight the first time it takes this kernel and keeps both, since the steps outside the
kernel's window (the bf16 paths, the AMX kernel) read the q4 layout. So a q4 model that uses this kernel holds
its linears twice (about 1 GB more for Qwen2.5-1.5B in q4-all).

AVX2 (Zen 2 and 3, Intel before Ice Lake): vpmaddubsw multiplies 32 byte pairs and adds them in pairs into
int16, so a 32-block's products are summed in int16 (they cannot overflow: 8 x 2 x 15 x 127 < 2^15) and
widened to int32 once per block. The sums are the same integers as with vpdpbusd.

Dispatch: `QuantLinear` uses it for q4 steps inside `QuantPlan`'s window (`vnni_tokens` to `vnni_until`),
measured on the CPU at hand against the bf16 paths from one token up (cpu_tuning); none where the kernel has no
vector form or the library cannot be built. Where it wins at one token, decode rounds activations to int8 as
llama.cpp's Q4 x Q8 decode does; where the bf16 GEMV wins (its products are exact in the weights), decode
stays there. Without AVX512_BF16 (AVX2) the GEMV is a scalar loop, 35x slower than this kernel on a 1536 x 8960
weight, and this kernel takes every step (`vnni_tokens` = 1) without timing.

Steps of up to 16 tokens read the packed weight straight from memory, 8 tokens per pass over a 16-row group
(4 on AVX2, which has half the registers); more tokens unpack a cache-sized panel first and multiply it with
every token tile. The two give bit-identical sums.

int8 weights (`--weights int8`, and the LM head and 6-bit GGUF tensors that `--weights q4` keeps at int8) have
a form of their own on AVX-512 VNNI, for steps of up to 16 tokens (`pack_int8`, `linear_int8`): the same int8
activations times the int8 weight as signed bytes. vpdpbusd wants one operand unsigned, so the activations go in
as xq + 128 and each 32-block's sum drops 128 * sum(q), precomputed per row and block at packing: exact in
int32. The plan times it against cpu_quant's int8 kernel (`QuantPlan.i8_tokens`..`i8_until`); on the AMX Xeon
it read Qwen2.5-1.5B's 233 MB int8 LM head at one token in 14.9 ms against 20.4 (15.8 against 11.5 GB/s).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

import torch

from ragsvc.serving.layers.cpu_build import load_library
from ragsvc.serving.layers.quant import BLOCK, QuantWeight, dequantise

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES: dict[str, list[Any]] = {
    "q4_vnni_available": [_P],
    "q4_vnni_pack": [_P, _P, _P, _I, _I, _P, _P, _P],
    **{f"q4_vnni_linear_{s}": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P] for s in ("f32", "bf16")},
    "i8_vnni_available": [_P],
    "i8_vnni_pack": [_P, _I, _I, _P, _P],
    **{f"i8_vnni_linear_{s}": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P] for s in ("f32", "bf16")},
}
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel (built on first use, then cached on disk); None when it cannot be built."""
    return load_library("q4_vnni", "cpu_q4_vnni.cpp", _SIGNATURES)


def vectorised(lib: ctypes.CDLL) -> bool:
    """Whether the library was built with its vpdpbusd path (the CPU has AVX512_VNNI and AVX512BW); without it
    the same sums come from a scalar loop, slower than the bf16 kernels."""
    flag = ctypes.c_int64(0)
    lib.q4_vnni_available(ctypes.byref(flag))
    return flag.value == 1


@dataclass(frozen=True)
class VnniWeight:
    """A q4 weight in the kernel's layout (see cpu_q4_vnni.cpp): rows in groups of 16, nibble-packed bytes
    (groups * 8 * Kp), d and m fp16 (groups * Kp / 2 each); the same size as the q4 layout it comes from."""

    out_features: int
    in_features: int
    padded_in: int
    data: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor


def pack(lib: ctypes.CDLL, qw: QuantWeight) -> VnniWeight:
    """`qw` (q4) -> the kernel's layout, once per weight (a register transpose per 16 rows x 64 weights)."""
    if qw.fmt != "q4" or qw.offset is None:
        raise ValueError(f"the int8-activation kernel multiplies q4 weights, not {qw.fmt}")
    n, kp = qw.out_features, qw.padded_in
    groups = -(-n // 16)
    data = torch.empty(groups * 8 * kp, dtype=torch.uint8)
    scale = torch.empty(groups * kp // 2, dtype=torch.float16)
    offset = torch.empty(groups * kp // 2, dtype=torch.float16)
    lib.q4_vnni_pack(qw.data.data_ptr(), qw.scale.data_ptr(), qw.offset.data_ptr(), n, kp, data.data_ptr(),
                     scale.data_ptr(), offset.data_ptr())
    return VnniWeight(n, qw.in_features, kp, data, scale, offset)


def _checked_call(x: torch.Tensor, bias: torch.Tensor | None, in_features: int,
                  out_features: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x and bias as both forms take them (x contiguous fp32 or bf16 on the CPU, `in_features` wide; bias
    contiguous fp32 with `out_features` values, which the kernel reads unchecked); ValueError otherwise."""
    if x.dtype not in _SUFFIX or x.device.type != "cpu":
        raise ValueError(f"the int8-activation kernel takes fp32 or bf16 CPU tensors, not {x.dtype} on {x.device}")
    if x.shape[1] != in_features:
        raise ValueError(f"input has {x.shape[1]} features, the weight expects {in_features}")
    if bias is not None and (bias.dtype != torch.float32 or bias.numel() != out_features):
        raise ValueError(f"bias must be fp32 with {out_features} values")
    return x.contiguous(), None if bias is None else bias.contiguous()


def linear(lib: ctypes.CDLL, x: torch.Tensor, vw: VnniWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) fp32 or bf16 -> (tokens, out) in x's dtype; `bias` fp32 (out,) or None."""
    x, bias = _checked_call(x, bias, vw.in_features, vw.out_features)
    m, k = x.shape
    out = torch.empty((m, vw.out_features), dtype=x.dtype)  # (tokens, out)
    if m == 0:
        return out
    getattr(lib, f"q4_vnni_linear_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), m, k, vw.padded_in, vw.out_features, vw.data.data_ptr(), vw.scale.data_ptr(),
        vw.offset.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr())
    return out


@functools.cache
def int8_limit(lib: ctypes.CDLL) -> int:
    """The most tokens a call of the int8-weight form may have (AVX-512 VNNI builds); 0 where it is not built.
    A constant of the build, asked once per library: every decode step's int8 linears check it."""
    flag = ctypes.c_int64(0)
    lib.i8_vnni_available(ctypes.byref(flag))
    return flag.value


@dataclass(frozen=True)
class VnniInt8Weight:
    """An int8 weight in the int8-weight form's layout (see cpu_q4_vnni.cpp): rows in groups of 16, 4 signed bytes
    per row and 4 k (groups * 16 * Kp bytes), and per group and 32-block the rows' 128 * sum(q) (int32); the
    per-row scales stay the QuantWeight's."""

    out_features: int
    in_features: int
    padded_in: int
    data: torch.Tensor
    corrections: torch.Tensor
    scale: torch.Tensor


def pack_int8(lib: ctypes.CDLL, qw: QuantWeight) -> VnniInt8Weight:
    """`qw` (int8) -> the int8-weight form's layout, once per weight."""
    if qw.fmt != "int8" or int8_limit(lib) == 0:
        raise ValueError(f"the int8-weight form takes int8 weights on AVX-512 VNNI builds, not {qw.fmt} here")
    n, kp = qw.out_features, qw.padded_in
    groups = -(-n // 16)
    data = torch.empty(groups * 16 * kp, dtype=torch.int8)
    corrections = torch.empty(groups * 16 * (kp // BLOCK), dtype=torch.int32)
    lib.i8_vnni_pack(qw.data.data_ptr(), n, kp, data.data_ptr(), corrections.data_ptr())
    return VnniInt8Weight(n, qw.in_features, kp, data, corrections, qw.scale.float().contiguous())


def linear_int8(lib: ctypes.CDLL, x: torch.Tensor, vw: VnniInt8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) fp32 or bf16, at most `int8_limit` tokens -> (tokens, out) in x's dtype; `bias` fp32
    (out,) or None. Activations are rounded to int8 per 32-block as for q4 weights."""
    x, bias = _checked_call(x, bias, vw.in_features, vw.out_features)
    m, k = x.shape
    limit = int8_limit(lib)
    if m > limit:
        raise ValueError(f"the int8-weight form takes at most {limit} tokens a call, not {m}")
    out = torch.empty((m, vw.out_features), dtype=x.dtype)  # (tokens, out)
    if m == 0:
        return out
    getattr(lib, f"i8_vnni_linear_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), m, k, vw.padded_in, vw.out_features, vw.data.data_ptr(), vw.corrections.data_ptr(),
        vw.scale.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr())
    return out


def quantise_activations(x: torch.Tensor) -> torch.Tensor:
    """x: (tokens, in) -> the fp32 values the kernel multiplies, sx * xq per 32-block (same rounding: x times
    127 / max|x| in fp32, to nearest even)."""
    tokens, k = x.shape
    kb = -(-k // BLOCK) * BLOCK
    xf = torch.zeros((tokens, kb), dtype=torch.float32)
    xf[:, :k] = x.float()
    blocks = xf.view(tokens, -1, BLOCK)  # (tokens, blocks, 32)
    amax = blocks.abs().amax(dim=2, keepdim=True)  # (tokens, blocks, 1)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    xq = torch.round(blocks * inv)
    return (xq * (amax / 127.0)).view(tokens, kb)[:, :k]


def reference_linear(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """The kernel in plain torch: int8-rounded activations times the de-quantised weight, fp32 sums, out in
    x's dtype (the oracle of the kernel's tests)."""
    y = quantise_activations(x) @ dequantise(qw).T  # (tokens, out)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
