"""What an answer is made of: the text, its citations, and the record of every retrieval and generation
round that produced it (queries, hits, prompt and cached tokens, time to first token)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ragsvc.errors import InvalidInput
from ragsvc.retrieval.context import Citation
from ragsvc.types import Hit

MAX_ROUNDS = 32
MAX_ANSWER_TOKENS = 2048
NO_PASSAGES = "no_passages"
"""The finish reason of an answer whose first retrieval found no passage: nothing was generated."""


@dataclass(frozen=True, slots=True)
class FlareOptions:
    """FLARE's knobs (Jiang et al., 2023, the "direct" variant)."""

    theta: float = 0.4
    """Retrieve again when any token of the look-ahead sentence has probability below this."""
    beta: float = 0.4
    """Tokens below this probability are masked out of the sentence to form the retrieval query."""
    max_rounds: int = 8
    """Most look-ahead sentences generated (each may retrieve once and regenerate)."""
    max_tokens: int = 256
    """Most tokens generated in all, over every model call of the answer: look-aheads (their text past the
    sentence too), regenerated sentences, drafts a regeneration replaced, written queries. When it is spent
    the answer so far is returned with finish_reason "length"."""
    lookahead_tokens: int = 64
    """Tokens generated per look-ahead; the sentence is cut at its end."""
    query_mode: Literal["masked", "question"] = "masked"
    """masked: the sentence without its low-confidence tokens; question: the model writes a question for
    each low-confidence span."""
    stop_at_sentence: bool = False
    """Abort each look-ahead once its first sentence is complete instead of decoding all lookahead_tokens
    (only that sentence is kept either way). It saves the decoding of the rest, but an aborted request reports
    no usage, so those rounds record no prompt or cached tokens."""
    accept: Literal["surer", "always"] = "surer"
    """Which sentence stands after a retrieval. always: the regenerated one (the paper). surer: the regenerated
    one only when its least likely word token is at least as likely as the look-ahead's; otherwise the
    look-ahead stands (see `flare.surer`). The passages stay in the prompt for later sentences either way."""

    def __post_init__(self) -> None:
        for name in ("theta", "beta"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"flare {name} must be a probability in [0, 1], got {value}")
        if not 1 <= self.max_rounds <= MAX_ROUNDS:
            raise InvalidInput(f"flare max_rounds must be in [1, {MAX_ROUNDS}], got {self.max_rounds}")
        if not 1 <= self.max_tokens <= MAX_ANSWER_TOKENS:
            raise InvalidInput(f"flare max_tokens must be in [1, {MAX_ANSWER_TOKENS}], got {self.max_tokens}")
        if not 4 <= self.lookahead_tokens <= 256:
            raise InvalidInput(f"flare lookahead_tokens must be in [4, 256], got {self.lookahead_tokens}")
        if self.accept not in ("surer", "always"):
            raise InvalidInput(f"flare accept must be 'surer' or 'always', got {self.accept!r}")
        if self.query_mode not in ("masked", "question"):
            raise InvalidInput(f"flare query_mode must be 'masked' or 'question', got {self.query_mode!r}")


@dataclass(frozen=True, slots=True)
class RetrievalRound:
    """One retrieval: why it ran, the query sent, and the hits that came back."""

    round: int
    """The generation round it served (0 = before any generation, for the question itself)."""
    reason: Literal["question", "low_confidence"]
    query: str
    hits: list[Hit]
    timings_ms: dict[str, float]
    added: list[int] = field(default_factory=list)
    """Citation numbers of the passages this retrieval added to the prompt (hits already there are skipped)."""


@dataclass(frozen=True, slots=True)
class GenerationRound:
    """One call to the model, with what the engine's prefix cache saved on it."""

    round: int
    kind: Literal["answer", "lookahead", "regenerate", "query", "final"]
    """final: completing a reasoning answer's missing "So the answer is X" sentence."""
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_ms: float
    total_ms: float
    min_prob: float | None
    """Lowest token probability of the kept text (None without logprobs)."""
    text: str
    low_tokens: list[str] = field(default_factory=list)
    """With FLARE: the kept text's word tokens whose probability fell below theta (empty otherwise)."""


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    citations: list[Citation]
    """Passages the answer cites ([n] markers), in order of first mention."""
    passages: list[Citation]
    """Every passage the model was shown, numbered as in the prompt."""
    retrievals: list[RetrievalRound]
    generations: list[GenerationRound]
    timings_ms: dict[str, float]
    finish_reason: str
    """stop (the model ended), length (max tokens; with FLARE, the tokens generated over all its calls),
    rounds (max rounds), repetition (the model started repeating itself, and the answer ends before the
    repeat; llm/repetition.py), or no_passages (the question's retrieval found nothing, so the model was not
    asked and the text is empty)."""
    final: str | None = None
    """The answer alone, read from the `reasoning` style's closing "So the answer is X" (None otherwise, or
    when the model did not write that sentence)."""

    @property
    def prompt_tokens(self) -> int:
        return sum(g.prompt_tokens for g in self.generations)

    @property
    def cached_tokens(self) -> int:
        return sum(g.cached_tokens for g in self.generations)

    @property
    def completion_tokens(self) -> int:
        return sum(g.completion_tokens for g in self.generations)
