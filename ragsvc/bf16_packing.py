"""Whether this torch and CPU pack bfloat16 weights for oneDNN (`torch.ops.mkldnn._reorder_linear_weight`).

The embedder's packed linears and the serving engine's both ask. torch's check is in the operator itself: oneDNN
packs bfloat16 only on CPUs with AVX512BW/VL/DQ or AVX-NE-CONVERT and raises elsewhere (an AVX2-only Zen 3,
say), so the answer comes from packing one tiny weight rather than from reading CPU flags, whose list would
drift from torch's.
"""

import functools

import torch


@functools.cache
def refusal() -> "str | None":
    """Why bfloat16 weights cannot be packed here (None: they can)."""
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return "this torch has no packed-linear operators"
    try:
        ops._reorder_linear_weight(torch.zeros((16, 16), dtype=torch.bfloat16), 1)
    except RuntimeError as exc:  # oneDNN's own words: which instructions it needs
        return f"this CPU cannot pack bfloat16 weights ({exc})"
    return None
