"""Importance of a memory on a 1-10 scale, as the expectation under the model's distribution over the score.

The paper asks the model for an integer. A sampled (or greedy) integer throws away what the logprobs say: a
model torn between 3 and 8 writes one of them, and a small model writes its favourite digit for everything.
Here the score is Σ p(s) · s over s = 1..10, with p renormalised over the score tokens at the position where
the number starts (the reply is primed with "Rating: " so the number comes first).

"10" needs care: tokenizers that split digits (Llama, Qwen and SmolLM2 all do) write it as "1" then "0", so
p("1") at the first position is the mass of both 1 and 10. It is split by the next token's distribution
after "1": p(10) = p("1") · p("0" | "1"), p(1) = p("1") · p(end | "1"), where "end" is anything that is not a
digit (a digit other than 0 would make 11-19, out of range, and is dropped). When the greedy reply already
started with "1", its second token's alternatives give that split for free; otherwise one more one-token
request continues the reply from "1", made only when p("1") is large enough to matter (`ten_check_min_p`).
A tokenizer with a single "10" token needs none of this: the token counts as 10 directly.

The integer the model writes is kept beside the expectation (`written`), and `sample_temperature` > 0 asks
for a separately sampled one (`sampled`), so the two can be compared on a labelled set
(ragsvc/agents/importance_eval.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragsvc.errors import InvalidInput
from ragsvc.llm.generator import Generation, Generator, Message

SCORES = tuple(range(1, 11))
TOP_LOGPROBS = 20
PRIMER = "Rating: "

_INSTRUCTION = (
    "Rate how much the memory below matters to the person who has it, on a scale from 1 to 10. 1 is an "
    "everyday routine that will be forgotten by tomorrow (making coffee, walking to the bus stop); 10 is an "
    "event that changes a life (losing a parent, getting married, being told of a serious illness). Reply with "
    "the number only."
)


@dataclass(frozen=True, slots=True)
class ImportanceOptions:
    ten_check_min_p: float = 0.01
    """Ask for p("0" | "1") with an extra request only when p("1") is at least this (0: always, 1: never)."""
    sample_temperature: float = 0.0
    """> 0: also sample an integer at this temperature (one more request per memory) into `sampled`."""
    seed: int = 0
    """Seed of the first memory's sample; the i-th of a batch uses seed + i."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ten_check_min_p <= 1.0:
            raise InvalidInput(f"ten_check_min_p must be in [0, 1], got {self.ten_check_min_p}")
        if not 0.0 <= self.sample_temperature <= 2.0:
            raise InvalidInput(f"sample_temperature must be in [0, 2], got {self.sample_temperature}")


@dataclass(frozen=True, slots=True)
class ImportanceScore:
    expected: float
    """Σ p(s) · s over 1..10 (renormalised); 5.5 when the model put no mass on any score token."""
    distribution: tuple[float, ...]
    """p(1), ..., p(10), renormalised over the score tokens."""
    mass: float
    """Probability the model put on score tokens before renormalising (low = it wanted to say something else)."""
    written: int | None
    """The integer in the greedy reply (None when it wrote none in 1..10)."""
    sampled: int | None = None
    """An integer sampled at `sample_temperature` (None when not asked for, or not parseable)."""


def importance_prompt(text: str, *, agent: str | None = None) -> list[Message]:
    """Chat messages asking for the rating, the reply primed so the number is its first token. The memory
    comes last, so the instruction is a prefix the engine's cache serves for every memory."""
    who = f"The person is {agent}.\n" if agent else ""
    return [{"role": "user", "content": f"{_INSTRUCTION}\n{who}Memory: {text.strip()}"},
            {"role": "assistant", "content": PRIMER}]


def score_token_probs(top: Sequence[tuple[str, float]]) -> dict[int, float]:
    """Probability per score read from one position's alternatives: tokens that are an integer in 1..10 once
    stripped of spaces (" 7" and "7" add up). p("1") still holds 10's mass when digits are split."""
    probs: dict[int, float] = {}
    for token, logprob in top:
        text = token.strip().replace("Ġ", "").replace("▁", "")
        if text.isdigit() and int(text) in SCORES and str(int(text)) == text:
            probs[int(text)] = probs.get(int(text), 0.0) + math.exp(logprob)
    return probs


def ten_share(after_one: Sequence[tuple[str, float]]) -> float:
    """Of the mass on "1" at the first position, the share that goes on to write "10": p("0") over
    p("0") + p(end), from the alternatives of the token after "1"."""
    p_zero, p_digit = 0.0, 0.0
    for token, logprob in after_one:
        text = token.strip()
        if text and text[0].isdigit():
            p_digit += math.exp(logprob)
            if text == "0":
                p_zero += math.exp(logprob)
    p_end = max(0.0, 1.0 - p_digit)
    return p_zero / (p_zero + p_end) if p_zero + p_end > 0 else 0.0


def expected_score(first: Sequence[tuple[str, float]], *, ten_share_of_one: float,
                   has_ten_token: bool = False) -> tuple[float, tuple[float, ...], float]:
    """(expectation, distribution over 1..10, mass on score tokens) from the first position's alternatives.
    `ten_share_of_one` splits p("1") between 1 and 10 (see `ten_share`); with a single "10" token in the
    vocabulary (`has_ten_token`, seen among the alternatives) the split is not applied."""
    probs = score_token_probs(first)
    if not has_ten_token and 1 in probs:
        p1 = probs[1]
        probs[1], probs[10] = p1 * (1.0 - ten_share_of_one), probs.get(10, 0.0) + p1 * ten_share_of_one
    mass = sum(probs.values())
    if mass <= 0:
        return 5.5, tuple(0.1 for _ in SCORES), 0.0
    dist = tuple(probs.get(s, 0.0) / mass for s in SCORES)
    return sum(s * p for s, p in zip(SCORES, dist, strict=True)), dist, min(mass, 1.0)


def parse_rating(text: str) -> int | None:
    """The first integer in `text` if it is in 1..10, else None."""
    match = re.search(r"\d+", text)
    if match is None:
        return None
    value = int(match.group())
    return value if value in SCORES else None


class ImportanceScorer:
    """Scores memories through any Generator with logprobs; one batched request per step for all memories."""

    def __init__(self, generator: Generator, *, options: ImportanceOptions = ImportanceOptions()) -> None:
        self.generator = generator
        self.options = options

    def score(self, text: str, *, agent: str | None = None) -> ImportanceScore:
        return self.score_many([text], agent=agent)[0]

    def score_many(self, texts: Sequence[str], *, agent: str | None = None) -> list[ImportanceScore]:
        if not texts:
            return []
        for i, t in enumerate(texts):
            if not t.strip():
                raise InvalidInput(f"memory {i} is empty; there is nothing to rate")
        prompts = [importance_prompt(t, agent=agent) for t in texts]
        greedy = self.generator.generate_many(prompts, max_tokens=2, top_logprobs=TOP_LOGPROBS)
        shares = self._ten_shares(prompts, greedy)
        sampled: list[int | None] = [None] * len(texts)
        if self.options.sample_temperature > 0:
            # one seed per memory: a shared seed draws the same uniform for every prompt, so near-identical
            # distributions would all land on the same integer (generate_many takes a single seed, hence a loop)
            drawn = [self.generator.generate(p, max_tokens=3, temperature=self.options.sample_temperature,
                                             seed=self.options.seed + i) for i, p in enumerate(prompts)]
            sampled = [parse_rating(g.text) for g in drawn]
        out = []
        for gen, share, draw in zip(greedy, shares, sampled, strict=True):
            first = _first_top(gen)
            has_ten = any(tok.strip() == "10" for tok, _ in first)
            expected, dist, mass = expected_score(first, ten_share_of_one=share, has_ten_token=has_ten)
            out.append(ImportanceScore(expected=expected, distribution=dist, mass=mass,
                                       written=parse_rating(gen.text), sampled=draw))
        return out

    def _ten_shares(self, prompts: list[list[Message]], greedy: list[Generation]) -> list[float]:
        """p("0" | "1") split for each memory: from the greedy reply when it began with "1", else from one
        batched continuation request for the memories whose p("1") reaches ten_check_min_p."""
        shares = [0.0] * len(prompts)
        follow_up: list[int] = []
        for i, gen in enumerate(greedy):
            p_one = score_token_probs(_first_top(gen)).get(1, 0.0)
            if gen.tokens and gen.tokens[0].token.strip() == "1" and len(gen.tokens) > 1:
                shares[i] = ten_share(gen.tokens[1].top or ((gen.tokens[1].token, gen.tokens[1].logprob),))
            elif p_one > 0 and p_one >= self.options.ten_check_min_p:
                follow_up.append(i)
        if follow_up:
            continued = [[prompts[i][0], {"role": "assistant", "content": PRIMER + "1"}] for i in follow_up]
            gens = self.generator.generate_many(continued, max_tokens=1, top_logprobs=TOP_LOGPROBS)
            for i, gen in zip(follow_up, gens, strict=True):
                shares[i] = ten_share(_first_top(gen))
        return shares


def _first_top(gen: Generation) -> tuple[tuple[str, float], ...]:
    """The first generated token's alternatives (itself alone when the server sent no alternatives)."""
    if not gen.tokens:
        raise InvalidInput("the generator returned no token logprobs; importance needs a server that sends "
                           "logprobs (top_logprobs)")
    first = gen.tokens[0]
    return first.top or ((first.token, first.logprob),)
