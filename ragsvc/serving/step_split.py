"""Which chunks of a step go to which half when a large step runs as two halves on two threads.

A chunk (one sequence's tokens for this step) stays whole: its attention reads its own K/V, so two halves
share nothing but the weights and write disjoint KV slots. Blocks a half reads from the prefix cache were full
and computed before the step (only such blocks are registered), so neither half waits on the other.

Balanced by tokens (the GEMMs' rows, most of a step's work) with the greedy longest-first rule. Weighing each
chunk's attention over its context as well balanced worse in the serving benchmark: tokens alone it is. A step
is left whole when it is small (a few decodes: each half would stream every weight for a handful of rows) or
when one chunk is so long that the larger half would still hold most of the tokens. Decode steps of a full
batch are split too: each half reads the weights for its own rows, and the two reads overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragsvc.serving.scheduler import ScheduledChunk


@dataclass(frozen=True)
class SplitPolicy:
    min_tokens: int = 32
    """Fewest tokens in a step worth splitting; below this (a few decodes) the step runs whole."""
    max_share: float = 0.6
    """Largest share of the step's tokens the larger half may hold: one OpenMP thread per half beats two on the
    whole step only while the halves are close to even."""

    def __post_init__(self) -> None:
        if self.min_tokens < 2:
            raise ValueError(f"min_tokens must be at least 2 (one token per half), got {self.min_tokens}")
        if not 0.5 <= self.max_share < 1.0:
            raise ValueError(f"max_share must be in [0.5, 1), got {self.max_share}")


def split_chunks(
    chunks: list[ScheduledChunk], policy: SplitPolicy
) -> tuple[list[ScheduledChunk], list[ScheduledChunk]] | None:
    """Two halves of `chunks` (each in the step's order), or None when the step should run whole."""
    total = sum(c.num_new_tokens for c in chunks)
    if len(chunks) < 2 or total < policy.min_tokens:
        return None
    sides: tuple[list[int], list[int]] = ([], [])
    loads = [0, 0]
    for i in sorted(range(len(chunks)), key=lambda i: -chunks[i].num_new_tokens):
        side = 0 if loads[0] <= loads[1] else 1
        sides[side].append(i)
        loads[side] += chunks[i].num_new_tokens
    if max(loads) > policy.max_share * total:
        return None
    return [chunks[i] for i in sorted(sides[0])], [chunks[i] for i in sorted(sides[1])]
