"""SamplingParams: how one request picks its tokens and when it stops."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_LOGPROBS = 20
SEED_RANGE = (-(1 << 63), (1 << 63) - 1)
"""What a torch.Generator's seed can hold, and what the OpenAI routes accept."""


def generator_seed(seed: int) -> int:
    """The seed to give a request's torch.Generator for the request's `seed` (within SEED_RANGE).

    torch's CPU generator (mt19937) is seeded from the low 32 bits of what it is given, so seeds 5 and 2**32 + 5,
    or -5 and 2**32 - 5, would draw the same tokens. Seeds in [0, 2**32) pass unchanged; any other is mixed
    (splitmix64's finaliser) before it is cut to 32 bits, so seeds that differ only in their high bits, or in
    sign, draw differently (two seeds can still meet: 2**64 of them fall on 2**32 states)."""
    if 0 <= seed < 1 << 32:
        return seed
    z = seed & 0xFFFF_FFFF_FFFF_FFFF
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & 0xFFFF_FFFF_FFFF_FFFF
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & 0xFFFF_FFFF_FFFF_FFFF
    return (z ^ (z >> 31)) & 0xFFFF_FFFF


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling options.

    Logprobs are log_softmax of the model's raw logits, before temperature, top-k and top-p: they describe
    the model's own confidence (what FLARE thresholds), independent of how a token was then picked.
    """

    temperature: float = 1.0
    """0 = greedy (argmax)."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = off."""
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    """Generation stops before the first occurrence of any of these strings (excluded from the text)."""
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    """Seeds this request's own torch.Generator, so its samples do not depend on the rest of the batch."""
    logprobs: int | None = None
    """None = off; 0 = the chosen token's logprob only; N = chosen + the top-N alternatives."""
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be in [-2**63, 2**63 - 1], got {self.seed}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}] (or None for off), got {self.logprobs}")
        # Accept lists from JSON callers but keep the dataclass hashable and immutable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
