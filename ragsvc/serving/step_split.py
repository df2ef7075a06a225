"""Which chunks of a step go to which half when a prompt step runs as two halves on two threads.

A chunk (one sequence's tokens for this step) stays whole: its attention reads its own K/V, so two halves
share nothing but the weights and write disjoint KV slots. Blocks a half reads from the prefix cache were full
and computed before the step (only such blocks are registered), so neither half waits on the other.

Balanced by estimated cost with the greedy costliest-first rule: a chunk's tokens (the GEMMs' rows, most of a
step's work) plus its attention, which grows with the context each token attends to (`context_weight`). A
step is left whole when it is small (a few decodes: each half would stream every weight for a handful of rows)
or when one chunk is so costly that the larger half would still hold most of the work. Decode steps of a full
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
    """Largest share of the step's cost the larger half may hold: one OpenMP thread per half beats two on the
    whole step only while the halves are close to even."""
    context_weight: float = 0.0
    """A token's attention cost per position of context it attends to, as a share of its linears' cost
    (`context_weight` below derives it from the model); 0 = balance by tokens alone."""

    def __post_init__(self) -> None:
        if self.min_tokens < 2:
            raise ValueError(f"min_tokens must be at least 2 (one token per half), got {self.min_tokens}")
        if not 0.5 <= self.max_share < 1.0:
            raise ValueError(f"max_share must be in [0.5, 1), got {self.max_share}")
        if self.context_weight < 0:
            raise ValueError(f"context_weight must be at least 0, got {self.context_weight}")

    def cost(self, chunk: ScheduledChunk) -> float:
        """Tokens, plus their attention: the chunk's tokens attend to `start + 1` ... `start + n` positions."""
        n = chunk.num_new_tokens
        return n * (1.0 + self.context_weight * (chunk.start + (n + 1) / 2))


def context_weight(*, linear_params: int, attention_width: int, attention_slowdown: float = 2.0) -> float:
    """`SplitPolicy.context_weight` of a decoder layer with `linear_params` weights in its linears and
    `attention_width` = query heads x head size: per position of context a token's attention costs 4 x width
    FLOPs (scores and values) against 2 x params for its linears, counted `attention_slowdown` times over
    because the attention kernel reaches a lower share of the CPU's peak than the GEMMs do."""
    if linear_params <= 0 or attention_width <= 0:
        raise ValueError("linear_params and attention_width must be positive")
    return attention_slowdown * 4 * attention_width / (2 * linear_params)


def split_chunks(
    chunks: list[ScheduledChunk], policy: SplitPolicy
) -> tuple[list[ScheduledChunk], list[ScheduledChunk]] | None:
    """Two halves of `chunks` (each in the step's order), or None when the step should run whole."""
    if len(chunks) < 2 or sum(c.num_new_tokens for c in chunks) < policy.min_tokens:
        return None
    costs = [policy.cost(c) for c in chunks]
    sides: tuple[list[int], list[int]] = ([], [])
    loads = [0.0, 0.0]
    for i in sorted(range(len(chunks)), key=lambda i: -costs[i]):
        side = 0 if loads[0] <= loads[1] else 1
        sides[side].append(i)
        loads[side] += costs[i]
    if max(loads) > policy.max_share * sum(costs):
        return None
    return [chunks[i] for i in sorted(sides[0])], [chunks[i] for i in sorted(sides[1])]
