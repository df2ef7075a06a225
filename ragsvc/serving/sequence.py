"""Sequence: one request's tokens and its place in the engine (waiting, running, finished).

Plain data shared by the scheduler, the block manager and the model runner; no tensors live here.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from ragsvc.serving.sampling_params import SamplingParams

_arrival = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A request's token ids (prompt then output) and how many of them already have KV in the cache.

    `num_computed_tokens` drives everything: the scheduler runs tokens [num_computed_tokens, len) next step
    (a whole prompt, a prompt chunk, or the one token sampled last step), so prefill and decode are the same
    operation with different lengths.
    """

    request_id: str
    token_ids: list[int]
    params: SamplingParams
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    num_hashed_blocks: int = 0
    """Leading blocks already registered in the prefix cache (the block manager's bookkeeping)."""
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    arrival: int = field(default_factory=lambda: next(_arrival))
    arrival_step: int = 0
    """The scheduler's step count when the request was added (how long it has waited, in steps)."""
    num_preemptions: int = 0

    def __post_init__(self) -> None:
        if not self.num_prompt_tokens:
            self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def num_blocks_needed(self, block_size: int, num_tokens: int | None = None) -> int:
        n = len(self.token_ids) if num_tokens is None else num_tokens
        return (n + block_size - 1) // block_size

    def block_tokens(self, index: int, block_size: int) -> list[int]:
        """Token ids stored in the block at `index` of this sequence's block table."""
        return self.token_ids[index * block_size : (index + 1) * block_size]
