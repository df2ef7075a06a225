"""What the engine hands back per request per step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """The chosen token's logprob and the top-N alternatives as (token_id, token text, logprob)."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    """All tokens generated so far."""
    text: str
    """Detokenised output so far (a matched stop string is excluded)."""
    new_text: str
    """The delta since the previous RequestOutput of this request."""
    logprobs: list[TokenLogprob]
    """For the tokens new in this output; empty when params.logprobs is None."""
    finished: bool
    finish_reason: str | None
    """"stop" | "length" | "abort"."""
    num_cached_tokens: int
    """Prompt tokens served from the prefix cache."""
