"""Speculative decoding: who proposes draft tokens, and how many of them the target model's own tokens accept.

One step of a speculating sequence runs its last sampled token plus k drafts through the model as one chunk
(the chunked-prefill path: several query tokens over the paged KV cache), so the forward yields k + 1 rows of
logits. Row i is the target's distribution after the real tokens and drafts 1..i. The target's greedy token
of row 0 is always emitted; draft i is accepted while it equals the target's token of row i - 1, and the
target's token after the last accepted draft is emitted too. So a step emits between 1 and k + 1 tokens, all
of them the target's greedy choices from logits over the same prefix plain decoding would use: the output is
plain greedy decoding's, only reached in fewer forwards. Logprobs come from the same rows.

Only greedy requests speculate. Sampled requests decode one token per step: with a deterministic proposer the
exact rule (accept draft d with probability p(d), else sample from p with d removed) would keep the output
distribution, but not a seeded request's exact tokens, which today do not depend on batch mates; it is left
out until a sampled workload shows a gain.

KV of rejected drafts was written into slots past the sequence's accepted length: those slots are simply
overwritten later, and whole blocks past the new length go back to the free list (`BlockManager.trim`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragsvc.serving import prompt_lookup

Proposer = Callable[[Sequence[int], int], list[int]]
"""(token ids so far, most drafts wanted) -> draft ids (possibly fewer, or none)."""

METHODS = ("prompt-lookup",)


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str = "prompt-lookup"
    num_tokens: int = 4
    """Most drafts verified per step (k); a step then runs up to k + 1 tokens of the sequence."""
    min_ngram: int = 2
    """Shortest tail n-gram prompt lookup matches: 1 proposes after any repeated token (more, worse guesses)."""
    max_ngram: int = 4
    """Longest tail n-gram it tries first."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative method {self.method!r} is not known; use one of {', '.join(METHODS)}")
        if not 1 <= self.num_tokens <= 16:
            raise ValueError(f"num_speculative_tokens must be in [1, 16], got {self.num_tokens}")
        if not 1 <= self.min_ngram <= self.max_ngram <= 16:
            raise ValueError(
                f"prompt-lookup n-gram range ({self.min_ngram}, {self.max_ngram}) must satisfy 1 <= min <= max <= 16"
            )

    def proposer(self) -> Proposer:
        def lookup(token_ids: Sequence[int], num_tokens: int) -> list[int]:
            return prompt_lookup.propose(
                token_ids, num_tokens=num_tokens, min_ngram=self.min_ngram, max_ngram=self.max_ngram
            )

        return lookup


def num_accepted(drafts: Sequence[int], targets: Sequence[int]) -> int:
    """How many leading drafts the target agrees with: draft i stands while drafts[i] == targets[i].

    targets[i] is the target's token from the row whose last input was draft i - 1 (row 0: the real token), so
    len(targets) == len(drafts) + 1 and the emitted tokens are targets[: num_accepted + 1].
    """
    if len(targets) != len(drafts) + 1:
        raise ValueError(f"{len(drafts)} drafts need {len(drafts) + 1} target tokens, got {len(targets)}")
    n = 0
    while n < len(drafts) and drafts[n] == targets[n]:
        n += 1
    return n


@dataclass
class SpecStats:
    """What speculation did so far: steps that carried drafts, drafts proposed, drafts accepted."""

    num_steps: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0

    def add(self, num_drafts: int, accepted: int) -> None:
        self.num_steps += 1
        self.num_draft_tokens += num_drafts
        self.num_accepted_tokens += accepted

    def as_dict(self) -> dict[str, float]:
        """Counters plus acceptance rate and tokens emitted per speculating step (accepted + the target's own)."""
        steps = self.num_steps or 1
        return {
            "num_spec_steps": self.num_steps,
            "num_draft_tokens": self.num_draft_tokens,
            "num_accepted_tokens": self.num_accepted_tokens,
            "acceptance_rate": round(self.num_accepted_tokens / (self.num_draft_tokens or 1), 4),
            "tokens_per_spec_step": round((self.num_accepted_tokens + self.num_steps) / steps, 4),
        }
