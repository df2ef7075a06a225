"""Weight-only quantisation formats for decode: what is stored, how it is made, and the plain-torch reference.

Decode streams every weight once per step, so at batch 1 its speed is the bytes per weight. Two formats:

- **int8**: symmetric, one fp32 scale per output channel (w = scale * q, q in -127..127). 8 bits per weight;
  round-off ~0.4% of a row's largest weight.
- **q4**: asymmetric 4-bit blocks of 32 along K with fp16 scale and offset (w = d * q + m, q in 0..15), 5 bits
  per weight, the layout of GGUF's Q4_1. Why asymmetric blocks of 32 with min/max fitting: a GGUF's Q4_K
  tensors are sub-blocks of 32 on a 16-level grid (w = d * sc * q - dmin * mn), so a block that uses its lowest
  and highest level (nearly all of them) is re-quantised onto the same grid, lossless up to the fp16 rounding
  of d and m. Re-quantising at load from the de-quantised weights also serves safetensors checkpoints and
  GGUF types we do not parse (Q6_K, Q5_K); the cost is measured, not assumed (`ragsvc bench quant-quality`).

K is padded with zero weights to a multiple of 64 (two 32-blocks: the kernel's unit), so any K works; padded
weights are zero in both formats (q4 stores them as q=0 with d=m=0).

`dequantise` is the reference every kernel is tested against: de-quantise to fp32, then matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

WEIGHT_FORMATS = ("bf16", "int8", "q4")
"""`--weights` choices. bf16 keeps the model's own weights (the reference); int8 and q4 quantise the linears
at load."""
BLOCK = 32
"""Weights per q4 block (one fp16 scale and offset each)."""
GROUP = 64
"""K is padded to a multiple of this: the kernels expand two 32-blocks per step."""


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
    n, k = weight.shape
    w = torch.zeros((n, padded(k)), dtype=torch.float32)
    w[:, :k] = weight.float()
    return w  # (out, Kp)


def quantise_int8(weight: torch.Tensor) -> QuantWeight:
    w = _pad(weight)  # (out, Kp)
    scale = w.abs().amax(dim=1) / 127.0  # (out,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return QuantWeight("int8", weight.shape[0], weight.shape[1], q.contiguous(), scale.contiguous(), None)


def quantise_q4(weight: torch.Tensor) -> QuantWeight:
    n, k = weight.shape
    w = _pad(weight).view(n, -1, BLOCK)  # (out, blocks, 32)
    lo, hi = w.amin(dim=2), w.amax(dim=2)  # (out, blocks)
    d = ((hi - lo) / 15.0).to(torch.float16)
    m = lo.to(torch.float16)
    d32, m32 = d.float(), m.float()
    safe = torch.where(d32 > 0, d32, torch.ones_like(d32))
    q = torch.round((w - m32[..., None]) / safe[..., None]).clamp_(0, 15).to(torch.uint8)  # (out, blocks, 32)
    q = q.view(n, -1, 2, BLOCK)  # (out, groups, [low block, high block], 32)
    packed = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, -1)  # (out, Kp / 2)
    return QuantWeight("q4", n, k, packed.contiguous(), d.contiguous(), m.contiguous())


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
