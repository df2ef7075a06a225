"""FLARE's decisions, as pure functions of the generated tokens (Jiang et al., 2023, "Active Retrieval Augmented
Generation", the direct variant).

The model writes the answer one look-ahead sentence at a time. If every token of the sentence is likely
(probability >= theta) it is kept as it is. Otherwise the sentence is a guess: its confident words become a
retrieval query (words holding a token below beta are masked out, since they are the ones most likely wrong
and would pull in passages about the wrong thing), new passages join the prompt, and the sentence is written again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ragsvc.llm.generator import TokenLogprob

_SENTENCE_END = re.compile(r"[.!?](?=\s)|[。！？]|\n")
"""Full-width 。！？ end a Chinese or Japanese sentence with no space after them."""
_WORD = re.compile(r"\w")
_WORDS = re.compile(r"\s*\w+")
"""A word with the whitespace before it, so a masked word leaves no gap before the punctuation after it."""
_ABBREVIATION = re.compile(r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|Prof|Gen|Col|Lt|Capt|Rev|vs|Inc|Ltd|Co))\.$")
"""A period that closes an initial or a title ("J. R. R. Tolkien", "U.S. Army", "St. Louis") ends no sentence.
A sentence that does end in a single capital ("World War I.") is then continued to its next end."""
_LIST_MARKER = re.compile(r"\s*(?:\d{1,3}|[a-z]|[ivx]{1,4})\.\s*")
"""An item number alone ("1.", "a.", "iv."): the start of a list item, not a sentence. Small models answer in
numbered lists; cut there, "1." would be a look-ahead sentence of its own, whose one unsure token sends a
retrieval off with an empty query."""


@dataclass(frozen=True, slots=True)
class Sentence:
    """The look-ahead cut at its first sentence end: the kept tokens and their text."""

    tokens: tuple[TokenLogprob, ...]
    text: str
    complete: bool
    """True when a sentence end was found, or the model stopped inside this text."""


def probability(token: TokenLogprob) -> float:
    return math.exp(token.logprob)


def cut_sentence(tokens: Sequence[TokenLogprob], *, finished: bool) -> Sentence:
    """The first sentence of a look-ahead. A sentence ends at . ! ? followed by whitespace, at 。！？, or at a
    newline, once some words were written (leading newlines and list item numbers do not end it); a period
    after an initial or a title does not end it. The token holding the end is kept, its text cut just after the end.
    `finished` says the model stopped after these tokens."""
    text = ""
    for i, token in enumerate(tokens):
        start = len(text)
        text += token.token
        if not _WORD.search(text):
            continue  # nothing written yet: a leading newline or space is not a sentence
        # look one character past this token, so "." + " next" is seen as an end
        following = tokens[i + 1].token[:1] if i + 1 < len(tokens) else ("\n" if finished else "")
        for match in _SENTENCE_END.finditer(text + following, max(0, start - 1)):
            end = match.end() if match.group() != "\n" else match.start()
            if (match.group() == "." and ends_abbreviation(text[:end])) or _LIST_MARKER.fullmatch(text[:end]):
                continue
            if end <= len(text) and _WORD.search(text[:end]):
                return Sentence(tuple(tokens[: i + 1]), text[:end], complete=True)
    return Sentence(tuple(tokens), text, complete=finished)


def ends_abbreviation(text: str) -> bool:
    """True when `text` ends with the period of an initial or a title, which ends no sentence."""
    return _ABBREVIATION.search(text) is not None


def min_probability(tokens: Sequence[TokenLogprob]) -> float | None:
    """Lowest probability among tokens that carry a word (whitespace and punctuation are not judged)."""
    probs = [probability(t) for t in tokens if _WORD.search(t.token)]
    return min(probs) if probs else None


def needs_retrieval(tokens: Sequence[TokenLogprob], theta: float) -> bool:
    """True when any word-bearing token's probability is below theta."""
    lowest = min_probability(tokens)
    return lowest is not None and lowest < theta


def surer(regenerated: Sequence[TokenLogprob], lookahead: Sequence[TokenLogprob]) -> bool:
    """True when the sentence written again after a retrieval is at least as sure as the look-ahead it would
    replace, by the statistic that triggered the retrieval (the least likely word token).

    FLARE retrieves because a low probability says the model lacks something; passages that supplied it
    make the sentence written again more likely. When the new sentence is less likely still, the new
    passages did not supply what was missing (or pulled the model to a passage about something else), and the
    look-ahead, written from the passages a single retrieval reads, stands. A sentence without words is
    never surer."""
    new, old = min_probability(regenerated), min_probability(lookahead)
    return new is not None and (old is None or new >= old)


def low_tokens(tokens: Sequence[TokenLogprob], theta: float) -> list[str]:
    """The word-bearing tokens below theta, as text: what made a look-ahead unsure enough to retrieve."""
    return [t.token.strip() for t in tokens if _WORD.search(t.token) and probability(t) < theta]


def masked_query(tokens: Sequence[TokenLogprob], beta: float) -> str:
    """The sentence with every word that holds a token of probability below beta removed, whitespace collapsed.

    Masking is by whole word, not by token: a sub-word tokenizer splits a name into pieces ("Janet" into
    "Jan" + "et"), and masking only the unsure piece would leave a fragment ("et Waldo") that matches
    unrelated passages lexically and moves the query's embedding towards nothing the model meant."""
    text = ""
    low: list[tuple[int, int]] = []  # character spans of the unsure tokens
    for token in tokens:
        start = len(text)
        text += token.token
        if _WORD.search(token.token) and probability(token) < beta:
            piece = token.token  # its characters without surrounding whitespace, which belongs to no word
            low.append((start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())))

    def keep(word: re.Match[str]) -> str:
        unsure = any(start < word.end() and word.start() < end for start, end in low)
        return "" if unsure else word.group()

    return " ".join(_WORDS.sub(keep, text).split())


def low_confidence_spans(tokens: Sequence[TokenLogprob], beta: float) -> list[str]:
    """Runs of consecutive low-probability tokens (below beta), as text: what a generated question asks about."""
    spans: list[str] = []
    current = ""
    for token in tokens:
        if _WORD.search(token.token) and probability(token) < beta:
            current += token.token
        elif current:
            spans.append(" ".join(current.split()))
            current = ""
    if current:
        spans.append(" ".join(current.split()))
    return [s for s in spans if s]
