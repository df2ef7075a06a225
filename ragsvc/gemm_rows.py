"""Row counts for oneDNN's bfloat16 GEMMs: round a call's rows up to one of a few sizes, so kernels are reused.

oneDNN builds (JIT-compiles) a kernel for every new problem shape and keeps the last 1,024 in a cache. A bfloat16
linear's shape includes its row count, the number of tokens in the call, which in a prompt chunk, a mixed serving
step or a batch of texts to embed takes nearly every value. Building costs far more than the multiply itself:
on a Xeon with AMX (torch 2.13), one call per new row count of SmolLM2's four layer linears took 22 ms on two
threads against 2.4 ms once built (rows 301-340), and MiniLM's four took 5.6 ms against 0.9 ms through
`F.linear` on one thread (rows 101-140). Every layer shares a shape's kernel, so a new row count costs that once
per forward, not once per layer; but a busy search server sees new ones all the time: the cache, shared by every
shape of every model in the process, evicts, and a profile of `ragsvc bench load`'s mixed phase after 16,000
requests still spent 6% of the server's CPU building kernels.

Rounding the rows up (`bucket_rows`) bounds the shapes to 142 per weight up to 16,384 rows, at most 1/16 more
rows above 512 and at most 15 more below. AMX multiplies tiles of 16 rows, so the padding mostly fills a tile
that was computed anyway: SmolLM2's four at rows 301-340 rounded up to 32 ran in 2.35 against 2.44 ms unrounded,
both once built. A serving level at 32 concurrent built 54 kernels where it had built 86, and `ragsvc bench load`
(two alternating pairs of runs) served 9-11% more searches and ingests in its mixed phase.
Padding rows are zeros and are dropped from the output; the real rows' values are what a call with the padded
row count computes (oneDNN may round a row differently at another row count, so not always bit-equal to the
unpadded call).
"""

# No `from __future__ import annotations`: TorchScript compiles `bucketed` from its annotations, which must be
# real types, and `Optional` is the spelling it reads.
import functools

import torch
import torch.nn.functional as F

EXACT_ROWS = 32
"""Row counts up to this are used as they are: decode steps and single short queries, few distinct values."""


def bucket_rows(rows: int, exact: int = EXACT_ROWS) -> int:
    """`rows` rounded up: itself up to `exact`, to a multiple of 16 up to 512, of 32 up to 1,024, then 16
    sizes an octave (a multiple of 64 up to 2,048, of 128 up to 4,096, ...)."""
    if rows <= exact:
        return rows
    step = 16
    if rows > 512:
        step = 32
    top = 1024
    while rows > top:
        step = top // 16
        top = top * 2
    return (rows + step - 1) // step * step


def bucketed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: bool) -> torch.Tensor:
    """x @ weight.T + bias over x's rows (every dimension but the last) rounded up by `bucket_rows`: `packed`
    says `weight` is a oneDNN-packed weight (`torch.ops.mkldnn._reorder_linear_weight`), else torch's layout.
    Scriptable, so a traced graph that calls it keeps the rounding dynamic."""
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    padded = bucket_rows(rows)
    if padded != rows:
        flat = F.pad(flat, [0, 0, 0, padded - rows])
    if packed:
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "")
    else:
        out = F.linear(flat, weight, bias)
    if padded != rows:
        out = out[:rows]
    shape = list(x.shape[:-1])
    shape.append(out.shape[-1])
    return out.reshape(shape)


@functools.cache
def _scripted() -> "torch.jit.ScriptFunction":
    return torch.jit.script(bucketed)


def bucketed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear` over rows rounded up, through the scripted `bucketed`: a graph traced through this call keeps
    the rounding for the row counts it is later called with (traced Python would fix the traced call's)."""
    return _scripted()(x, weight, bias, False)
