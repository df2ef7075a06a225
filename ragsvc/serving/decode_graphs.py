"""Decode steps replayed as CUDA graphs: one captured forward per batch size, fed through buffers that never move.

On a GPU a decode step of a small model is bound by launching kernels from Python, not by arithmetic or bytes:
each layer launches its norms, projections, rotary, cache writes and attention as separate kernels, each through
Python and the driver. On an H200 a Qwen2.5-1.5B-shaped
step took ~18 ms at batch 1, where reading its weights would take about 0.7 ms at the card's copy rate (an
estimate; eval/baselines/gpu-h200.md). A CUDA graph records the step's launches once and replays all of them
with one call.

A graph replays fixed addresses with fixed shapes, so:
- graphs are captured at start for the batch sizes in `graph_sizes` (1, 2, 4, then every multiple of 8 up to the
  engine's `max_num_seqs`), largest first, sharing one memory pool; a step of n sequences replays the smallest
  size >= n;
- every input of the step lives in a buffer allocated once (`_Buffers`): token ids, positions, KV slots,
  context lengths, and block tables as wide as the longest sequence the engine admits (rounded up as the
  runner rounds every step's tables). A step copies its tensors into the first n rows;
- rows n.. of the size are padding: token 0 at position 0, writing its K and V into a scratch block that no
  sequence owns (the runner allocates one block more than the block manager hands out) and attending to that
  one slot. Nothing real reads the scratch block, and the padding rows' logits are dropped.

Only steps of single-token chunks read through the paged kernel's block tables qualify (`takes`): a prefill
chunk's shapes vary with its tokens, and speculative drafts make multi-token chunks. Those steps, and every
step on a CPU, run the model as before.

Mode "eager" runs the same buffers, padding and scratch block without capturing (on any device): that is how
the CPU tests check everything a GPU replays except the capture itself.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ragsvc.serving.layers.attention import AttentionMetadata

logger = logging.getLogger(__name__)

GraphMode = Literal["capture", "eager"]
Forward = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor], torch.Tensor]
"""(input_ids, positions, meta, logit_rows) -> (rows, vocab) logits: the model over the runner's KV cache."""


def graph_sizes(max_seqs: int) -> list[int]:
    """The batch sizes to capture: 1, 2, 4 and multiples of 8, the last one `max_seqs` itself. Steps of a few
    sequences pad to the next power of two; larger ones waste at most 7 rows of a step that is already wide."""
    if max_seqs < 1:
        raise ValueError(f"max_seqs must be positive, got {max_seqs}")
    return sorted({min(size, max_seqs) for size in (1, 2, 4, *range(8, max_seqs + 8, 8))})


def size_for(n: int, sizes: list[int]) -> int | None:
    """The smallest captured size that holds `n` rows, or None when none does."""
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


@dataclass(frozen=True)
class _Buffers:
    """A step's inputs at fixed addresses, `rows` = the largest size."""

    input_ids: torch.Tensor  # (rows,) long
    positions: torch.Tensor  # (rows,) long
    slots: torch.Tensor  # (rows,) long: the flat KV slot each token's K and V go to
    tables: torch.Tensor  # (rows, width) int32 block tables
    lens: torch.Tensor  # (rows,) int32 context lengths, the new token included
    logit_rows: torch.Tensor  # (rows,) long: 0..rows-1, every row reaches the LM head

    @classmethod
    def allocate(cls, rows: int, width: int, device: torch.device) -> _Buffers:
        def longs() -> torch.Tensor:
            return torch.zeros(rows, dtype=torch.long, device=device)

        return cls(input_ids=longs(), positions=longs(), slots=longs(),
                   tables=torch.zeros((rows, width), dtype=torch.int32, device=device),
                   lens=torch.ones(rows, dtype=torch.int32, device=device),
                   logit_rows=torch.arange(rows, dtype=torch.long, device=device))


class DecodeGraphs:
    """The captured (or, in mode "eager", directly run) decode forwards of one runner, by batch size."""

    def __init__(self, forward: Forward, *, max_seqs: int, table_width: int, scratch_block: int, block_size: int,
                 device: torch.device, mode: GraphMode) -> None:
        """`table_width`: block-table entries a sequence can have (max_model_len / block_size, rounded up);
        `scratch_block`: a KV block no sequence is given, where the padding rows write."""
        if mode == "capture" and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}; use mode 'eager' to check the buffers")
        self.sizes = graph_sizes(max_seqs)
        self.mode = mode
        self.table_width = table_width
        self.replays = 0
        """Steps run through the buffers (captured graphs replayed, or eager forwards over them)."""
        self._forward = forward
        self._scratch_slot = scratch_block * block_size
        self._scratch_block = scratch_block
        self._buf = _Buffers.allocate(self.sizes[-1], table_width, device)
        self._meta = {size: self._metadata(size) for size in self.sizes}
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _metadata(self, size: int) -> AttentionMetadata:
        """The attention metadata of a step of `size` rows: views of the buffers, so a graph reads what the
        next step copies in."""
        b = self._buf
        return AttentionMetadata(slot_mapping=b.slots[:size], num_decode_tokens=size,
                                 decode_block_tables=b.tables[:size], decode_context_lens=b.lens[:size])

    def _run(self, size: int) -> torch.Tensor:
        b = self._buf
        return self._forward(b.input_ids[:size], b.positions[:size], self._meta[size], b.logit_rows[:size])

    def _pad(self, start: int, size: int) -> None:
        """Rows [start, size) become padding: token 0 at position 0, one context slot in the scratch block."""
        if start >= size:
            return
        b = self._buf
        b.input_ids[start:size] = 0
        b.positions[start:size] = 0
        b.slots[start:size] = self._scratch_slot
        b.tables[start:size, 0] = self._scratch_block
        b.lens[start:size] = 1

    def capture(self) -> None:
        """Capture one graph per size, largest first (the smaller ones then fit in the memory the largest's
        pool already holds). Each is run once uncaptured first, which compiles its Triton kernels: a
        compilation cannot be recorded."""
        if self.mode != "capture":
            return
        started = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            self._pad(0, size)
            self._run(size)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = self._run(size)
            self._graphs[size] = (graph, out)
        torch.cuda.synchronize()
        logger.info("captured %d decode graphs (batch sizes %s) in %.1f s", len(self.sizes),
                    ",".join(map(str, self.sizes)), time.perf_counter() - started)

    def takes(self, tokens: int, meta: AttentionMetadata) -> bool:
        """Whether a step of `tokens` packed tokens with this metadata can run through the buffers: single-token
        chunks only, read through block tables that fit the buffers' width, no more rows than the largest size."""
        tables = meta.decode_block_tables
        return (not meta.prefills and meta.num_decode_tokens == tokens and tables is not None
                and meta.decode_context_lens is not None and tables.shape[1] <= self.table_width
                and size_for(tokens, self.sizes) is not None)

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
            logit_rows: torch.Tensor) -> torch.Tensor:
        """The step's logits for `logit_rows` (rows of the packed step), as the plain forward returns them.
        Call `takes` first."""
        n = input_ids.shape[0]
        size = size_for(n, self.sizes)
        tables, lens = meta.decode_block_tables, meta.decode_context_lens
        if size is None or tables is None or lens is None:
            raise ValueError(f"a step of {n} tokens cannot run through the decode graphs; ask takes() first")
        b = self._buf
        b.input_ids[:n].copy_(input_ids)
        b.positions[:n].copy_(positions)
        b.slots[:n].copy_(meta.slot_mapping)
        # entries past a row's own table are never read: the kernel stops at its context length
        b.tables[:n, : tables.shape[1]].copy_(tables)
        b.lens[:n].copy_(lens)
        self._pad(n, size)
        if self.mode == "capture":
            graph, out = self._graphs[size]
            graph.replay()
        else:
            out = self._run(size)
        self.replays += 1
        return out[logit_rows]
