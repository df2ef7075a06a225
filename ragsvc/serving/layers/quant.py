"""Weight-only quantisation formats for decode: what is stored, how it is made, and the plain-torch reference.

Decode streams every weight once per step, so at batch 1 its speed is the bytes per weight. Two formats:

- **int8**: symmetric, one fp32 scale per output channel (w = scale * q, q in -127..127). 8 bits per weight;
  round-off ~0.4% of a row's largest weight.
- **q4**: asymmetric 4-bit blocks of 32 along K with fp16 scale and offset (w = d * q + m, q in 0..15), 5 bits
  per weight, the layout of GGUF's Q4_1. Why asymmetric blocks of 32 with min/max fitting: a GGUF's Q4_K
  tensors are sub-blocks of 32 on a 16-level grid (w = d * sc * q - dmin * mn), so a block that uses its lowest
  and highest level is re-quantised onto the same grid, lossless up to the fp16 rounding of d and m; one that
  misses a level or three at the top is too, because the range is also tried over 14, 13 and 12 steps.
  Re-quantising at load from the de-quantised weights also serves safetensors checkpoints; tensors a GGUF kept
  at more bits (Q6_K, Q8_0) go to int8 instead (quant_linear.keep_fine_weights). The quality cost is
  measured, not assumed (`ragsvc bench quant-quality`).

K is padded with zero weights to a multiple of 64 (two 32-blocks: the kernel's unit), so any K works; padded
weights are zero in both formats (q4 stores them as q=0 with d=m=0).

`dequantise` is the reference every kernel is tested against: de-quantise to fp32, then matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

WEIGHT_FORMATS = ("bf16", "int8", "q4", "q4-all")
"""`--weights` choices. bf16 keeps the model's own weights (the reference); int8 and q4 quantise the linears
at load. q4 keeps the LM head, and a 4-bit GGUF's higher-precision tensors, in int8; q4-all puts every linear,
LM head included, in q4 (fewest bytes per step; its quality cost is measured like the others')."""
BLOCK = 32
"""Weights per q4 block (one fp16 scale and offset each)."""
GROUP = 64
"""K is padded to a multiple of this: the kernels expand two 32-blocks per step."""
SPANS = (15, 14, 13, 12)
"""Steps a q4 block's range is divided into, tried per block (least squared error wins): a block of a 4-bit
GGUF tensor that never uses its top level or two is still put back on its own grid."""


@dataclass(frozen=True)
class QuantWeight:
    """One linear's quantised weight. `fmt` "int8": data (N, Kp) int8, scale (N,) fp32, offset None.
    `fmt` "q4": data (N, Kp / 2) uint8 nibble pairs, scale and offset (N, Kp / 32) fp16."""

    fmt: str
    out_features: int
    in_features: int
    data: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor | None

    @property
    def padded_in(self) -> int:
        return padded(self.in_features)

    def to(self, device: torch.device) -> QuantWeight:
        offset = None if self.offset is None else self.offset.to(device)
        return replace(self, data=self.data.to(device), scale=self.scale.to(device), offset=offset)

    def nbytes(self) -> int:
        extra = 0 if self.offset is None else self.offset.nbytes
        return self.data.nbytes + self.scale.nbytes + extra


def padded(k: int) -> int:
    return -(-k // GROUP) * GROUP


def quantise(weight: torch.Tensor, fmt: str) -> QuantWeight:
    """weight: (out, in) float -> its `fmt` form. ValueError for an unknown format."""
    if fmt == "int8":
        return quantise_int8(weight)
    if fmt == "q4":
        return quantise_q4(weight)
    raise ValueError(f"weight format {fmt!r} cannot be quantised; use one of 'int8', 'q4'")


def _pad(weight: torch.Tensor) -> torch.Tensor:
    """(out, Kp) fp32 copy of `weight`, zeros past its columns, on the weight's device: a GPU model's weights are
    quantised on the GPU, not copied to the CPU, quantised there on its few cores and copied back."""
    n, k = weight.shape
    w = torch.zeros((n, padded(k)), dtype=torch.float32, device=weight.device)
    w[:, :k] = weight.float()
    return w  # (out, Kp)


QUANTISE_ROWS = 4096
"""Rows quantised at a time: each row is independent, and the scale search's fp32 temporaries of a whole LM head
(152k x 1536 for Qwen2.5) ran to several GB on top of the model and exhausted 24 GB on an fp32 load."""


def quantise_int8(weight: torch.Tensor) -> QuantWeight:
    if weight.shape[0] > QUANTISE_ROWS:
        parts = [quantise_int8(weight[i:i + QUANTISE_ROWS]) for i in range(0, weight.shape[0], QUANTISE_ROWS)]
        return QuantWeight("int8", weight.shape[0], weight.shape[1], torch.cat([p.data for p in parts]),
                           torch.cat([p.scale for p in parts]), None)
    w = _pad(weight)  # (out, Kp)
    scale = w.abs().amax(dim=1) / 127.0  # (out,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return QuantWeight("int8", weight.shape[0], weight.shape[1], q.contiguous(), scale.contiguous(), None)


def quantise_q4(weight: torch.Tensor) -> QuantWeight:
    n, k = weight.shape
    if n > QUANTISE_ROWS:
        parts = [quantise_q4(weight[i:i + QUANTISE_ROWS]) for i in range(0, n, QUANTISE_ROWS)]
        return QuantWeight("q4", n, k, torch.cat([p.data for p in parts]), torch.cat([p.scale for p in parts]),
                           torch.cat([p.offset for p in parts if p.offset is not None]))
    w = _pad(weight).view(n, -1, BLOCK)  # (out, blocks, 32)
    lo, hi = w.amin(dim=2), w.amax(dim=2)  # (out, blocks)
    m = lo.to(torch.float16)
    m32 = m.float()[..., None]
    best_q, best_d, best_err = None, None, None
    for levels in SPANS:  # the block's range over 15, 14, ... steps: the best per block is kept
        d = ((hi - lo) / levels).to(torch.float16)
        d32 = d.float()[..., None]
        q = torch.round((w - m32) / torch.where(d32 > 0, d32, torch.ones_like(d32))).clamp_(0, 15)
        err = (q * d32 + m32 - w).pow_(2).sum(dim=2)  # (out, blocks)
        if best_q is None or best_d is None or best_err is None:
            best_q, best_d, best_err = q, d, err
            continue
        better = err < best_err
        best_q = torch.where(better[..., None], q, best_q)
        best_d, best_err = torch.where(better, d, best_d), torch.minimum(err, best_err)
    assert best_q is not None and best_d is not None
    q8 = best_q.to(torch.uint8).view(n, -1, 2, BLOCK)  # (out, groups, [low block, high block], 32)
    packed = (q8[:, :, 0, :] | (q8[:, :, 1, :] << 4)).reshape(n, -1)  # (out, Kp / 2)
    return QuantWeight("q4", n, k, packed.contiguous(), best_d.contiguous(), m.contiguous())


def grid_error(weight: torch.Tensor, qw: QuantWeight) -> float:
    """Mean round-off of `qw` in units of each block's step: ~0.25 for weights spread over a range (uniform
    round-off), near 0 for weights that already sit on a 4-bit grid (a GGUF's Q4_K / Q4_0 / Q4_1 tensors)."""
    n = weight.shape[0]
    # a GPU weight's quantised form read from the cache sits on the CPU
    err = (dequantise(qw.to(weight.device)) - weight.float()).abs()  # (out, in)
    w = _pad(weight).view(n, -1, BLOCK)
    step = ((w.amax(dim=2) - w.amin(dim=2)) / 15).clamp_min(1e-12)  # (out, blocks)
    per_block = _pad(err).view(n, -1, BLOCK).mean(dim=2)
    return float((per_block / step).mean())


def dequantise(qw: QuantWeight) -> torch.Tensor:
    """The fp32 weight (out, in) that `qw` stands for: the reference the kernels are checked against."""
    n, k = qw.out_features, qw.in_features
    if qw.fmt == "int8":
        return (qw.data.float() * qw.scale[:, None])[:, :k]
    assert qw.offset is not None
    groups = qw.data.view(n, -1, 1, BLOCK)  # (out, groups, 1, 32)
    q = torch.cat([groups & 0xF, groups >> 4], dim=2).view(n, -1, BLOCK).float()  # (out, blocks, 32)
    w = q * qw.scale.float()[..., None] + qw.offset.float()[..., None]
    return w.reshape(n, -1)[:, :k]


def reference_linear(x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x: (tokens, in) -> (tokens, out) in x's dtype, computed as the kernels do: fp32 sums over the
    de-quantised weight, with x rounded to bf16 first for q4 (the kernel multiplies bf16 pairs)."""
    xs = x.to(torch.bfloat16).float() if qw.fmt == "q4" else x.float()
    y = xs @ dequantise(qw).T  # (tokens, out)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
