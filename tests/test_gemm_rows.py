"""Row counts rounded up for oneDNN's bfloat16 GEMMs: few distinct sizes, little padding, and the real rows'
values what a call at the padded row count computes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ragsvc.embed.packed_linear import unavailable_reason
from ragsvc.gemm_rows import EXACT_ROWS, bucket_rows, bucketed, bucketed_linear


def test_rounding_bounds_the_sizes_and_the_padding():
    sizes = [bucket_rows(m) for m in range(1, 16_385)]
    assert all(b >= m for m, b in enumerate(sizes, 1)), "never fewer rows than asked"
    assert sizes == sorted(sizes), "more rows never round to fewer"
    assert sizes[:EXACT_ROWS] == list(range(1, EXACT_ROWS + 1)), "short calls are left as they are"
    assert len(set(sizes)) <= 150, "a few kernels per weight, far below oneDNN's 1,024-entry cache"
    assert all(b - m < 16 for m, b in enumerate(sizes[:512], 1)), "under 16 rows of padding up to 512"
    assert all((b - m) * 16 <= m for m, b in enumerate(sizes, 1) if m > 512), "at most 1/16 more above 512"
    assert all(b % 16 == 0 for b in sizes[EXACT_ROWS:]), "whole AMX tiles of 16 rows"
    assert bucket_rows(33) == 48 and bucket_rows(513) == 544 and bucket_rows(1025) == 1088
    assert bucket_rows(40, exact=64) == 40


def _weights(k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(k * n)
    return torch.randn(n, k, generator=g).bfloat16(), torch.randn(n, generator=g).bfloat16()


@pytest.mark.parametrize("shape", [(5, 24), (33, 24), (2, 57, 24), (3, 1, 24), (600, 24)])
def test_the_real_rows_are_a_padded_call_s_rows(shape):
    weight, bias = _weights(24, 40)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(len(shape))).bfloat16()
    with torch.inference_mode():
        out = bucketed_linear(x, weight, bias)
        flat = x.reshape(-1, 24)
        rows = flat.shape[0]
        padded = F.linear(F.pad(flat, [0, 0, 0, bucket_rows(rows) - rows]), weight, bias)
    assert out.shape == (*shape[:-1], 40)
    assert torch.equal(out.reshape(-1, 40), padded[:rows])
    torch.testing.assert_close(out.float(), F.linear(x.float(), weight.float(), bias.float()), atol=0.05, rtol=0.02)


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_a_packed_weight_gives_the_plain_weight_s_values_within_a_rounding():
    weight, bias = _weights(64, 48)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)
    x = torch.randn(2, 45, 64, generator=torch.Generator().manual_seed(1)).bfloat16()
    scripted = torch.jit.script(bucketed)
    with torch.inference_mode():
        out = scripted(x, packed, bias, True)
        assert torch.equal(out, bucketed(x, packed, bias, True)), "scripted and eager are one computation"
        torch.testing.assert_close(out.float(), bucketed(x, weight, bias, False).float(), atol=0.05, rtol=0.02)


def test_a_graph_traced_through_it_rounds_each_call_s_own_rows():
    weight, _ = _weights(16, 8)
    graph = torch.jit.trace(lambda x: bucketed_linear(x, weight, None), torch.randn(40, 16).bfloat16())
    for rows in (3, 40, 77, 700):
        x = torch.randn(rows, 16).bfloat16()
        assert torch.equal(graph(x), bucketed_linear(x, weight, None)), rows


ONE_KERNEL = """
import torch
from ragsvc.embed.packed_linear import PackedLinear
from ragsvc.gemm_rows import bucketed_linear
from ragsvc.serving.layers.linear import PackedLinear as ServingLinear
weight, bias = torch.randn(40, 64).bfloat16(), torch.randn(40).bfloat16()
packed = torch.jit.script(PackedLinear(weight, bias))
serving = ServingLinear(torch.nn.Linear(64, 40, bias=False).bfloat16(), batch_hint=32)
with torch.inference_mode():
    for rows in range(33, 49):
        x = torch.randn(rows, 64).bfloat16()
        packed(x)
        bucketed_linear(x, weight, bias)
        serving(x)
"""


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_sixteen_row_counts_build_one_kernel_per_weight_layout():
    """oneDNN's own log of what it built: rows 33-48 through the embedder's packed and plain bf16 linears and the
    serving engine's packed one are all multiplied as 48 rows (without the rounding it logs 16 row counts each)."""
    run = subprocess.run([sys.executable, "-c", ONE_KERNEL], env={**os.environ, "ONEDNN_VERBOSE": "2"},
                         capture_output=True, text=True, timeout=120, check=True)
    # the packed weight's kernel logs its rows as "mb48ic64oc40", the plain weight's as "48x64:64x40"
    shape = re.compile(r",(?:mb(\d+)ic\d+oc\d+|(\d+)x\d+:\d+x\d+),")
    built = [m for line in run.stdout.splitlines() if ",create:cache_miss," in line and (m := shape.search(line))]
    rows = [int(m.group(1) or m.group(2)) for m in built]
    assert sorted(rows) == [48, 48, 48], f"kernels built for row counts {rows}: one per linear expected"
