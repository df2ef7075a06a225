"""The lean BERT's bfloat16 linears with their weights packed once for oneDNN, for its traced graph.

`F.linear` on a bfloat16 weight hands oneDNN the weight in torch's layout, and oneDNN re-blocks it for its kernel on
every call: on a Xeon with AMX that copy of 0.4-1.2 MB costs about as much as the multiply itself for a query's
10-20 rows (MiniLM's 384 x 1536 linear with its bias at 14 rows: 193-196 us plain, 102-106 us from a weight packed
once, one core). `PackedLinear` keeps the packed copy (`torch.ops.mkldnn._reorder_linear_weight`) and calls the
kernel on it (`_linear_pointwise`, over rows rounded up by `gemm_rows` so that its built kernels are reused). That
is oneDNN's matmul still, but the packed blocking may sum in another order for some row counts, so its bfloat16
outputs can round apart from the plain call's (MiniLM: up to 5e-4 per element of a unit vector;
`traced_forward.PACKED_MIN_COSINE` bounds it). The packed copies cost one more copy of the bf16
weights (MiniLM: 46 MiB more resident per embedder), shared by both layouts' graphs.

A packed weight is an opaque oneDNN tensor, which a traced graph cannot hold as a constant; a scripted module
holding it as an attribute can be called from one (and survives freezing), so each linear is its own tiny
scripted module and the graph calls it.

Packing pays where oneDNN's bfloat16 kernel is AMX's: a traced MiniLM pass on one AMX core took 5.6 against
7.3 ms for a query, 7.1 against 10.1 ms for 4 queries, 12.0 against 15.1 ms for 4 documents of 40 tokens and
73 against 81 ms for 16. On a Zen 4 (AVX512-BF16, no AMX) an eager packed linear measured 0.8x at 4-16 rows, so
the embedder packs only on a CPU with AMX (`fast.cpu_has_amx`).
"""

# No `from __future__ import annotations` here: TorchScript reads PackedLinear's annotations, and it must be one
# class defined once (a class made anew per call shares its qualified name with the others in TorchScript's
# cache, and scripting one after another was seen to fail).
from typing import TYPE_CHECKING

import torch

from ragsvc import bf16_packing
from ragsvc.gemm_rows import bucketed

if TYPE_CHECKING:
    from ragsvc.embed.lean_bert import LeanBert

PACK_ROWS = 64
"""The row count oneDNN is told to expect when it picks the packed layout. MiniLM on an AMX core gave the same
times packed for 16, 64 or 256 (queries of 1-4 texts, documents of 4 and 16)."""


def unavailable_reason() -> "str | None":
    """Why weights cannot be packed in this torch or on this CPU (None: they can)."""
    return bf16_packing.refusal()


class PackedLinear(torch.nn.Module):
    """x @ weight.T + bias with `weight` packed once."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bucketed(x, self.weight, self.bias, True)


def packed_linears(lean: "LeanBert") -> "tuple[torch.nn.ModuleList, dict[int, torch.nn.Module]]":
    """Every linear of `lean`'s layers as a scripted `PackedLinear`: the modules (to register on the module being
    traced, so the graph calls them rather than copying them in) and the same keyed by the `id` of the weight
    they replace (for `LeanBert.linear`, which is called with that weight)."""
    by_weight: dict[int, torch.nn.Module] = {}
    with torch.inference_mode():
        for layer in lean.layers:
            for weight, bias in ((layer.qkv_weight, layer.qkv_bias), (layer.out_weight, layer.out_bias),
                                 (layer.up_weight, layer.up_bias), (layer.down_weight, layer.down_bias)):
                by_weight[id(weight)] = torch.jit.script(PackedLinear(weight, bias))
    return torch.nn.ModuleList(list(by_weight.values())), by_weight
