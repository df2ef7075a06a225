"""Automatic checks of interview answers: expected keywords, a yes/no polarity, or both.

A check is derived from the data an answer should rest on (a persona's summary, a seed memory, the seeded
event, a plan memory, a reflection), never written by hand for one town. Its keywords are that text's content
words: lower-cased, stop words and the names the question already gives away left out.

Matching is deliberately loose about word forms: two words match when they share a prefix of at least five
letters (or the whole of the shorter word when it is shorter than that), so "baker" matches "bakery",
"librarian" matches "library" and "painter" matches "painting", without a stemmer's language tables. The
price is an occasional false match between unrelated words with a long common start; the paired comparisons
between conditions see the same checks, so such noise does not favour one condition.

A polarity check reads the first yes/no signal of the answer's first sentence ("Yes, ...", "No, I haven't",
"I don't think so"): small models often hedge after committing, and the commitment is what is scored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Polarity = Literal["yes", "no"]

_STOP_TEXT = """
a about above after again against all also am an and any are around as at be because been before being below
between both but by can could day did do does doing done down during each even every everyone few for from
further get gets getting go goes going good had has have having he her here hers herself him himself his how i
if in into is it its itself just know knows like little lot made make makes many may me more most much must my
myself near new next no nor not now of off often old on once one only or other our ours ourselves out over own
quite really run runs said same say says see she should since so some still such take takes than that the their
theirs them themselves then there these they thing things this those through to too under until up upon us very
want wants was we well were what when where which while who whom why will with would yet you your yours yourself
evening morning afternoon night today tomorrow yesterday week weekend usual usually always every host hosting
invite inviting invited people person someone somebody time times hour hours minute minutes o'clock
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())  # noqa: SIM905 - a word list reads better as text
"""Function words, plus words about time and invitation that any answer about a day or an event may contain:
they cannot tell a right answer from a wrong one."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_YES = re.compile(r"\b(yes|yeah|yep|of course|certainly|definitely|(?:i do|i have|i did)(?! not| never))\b")
_NO = re.compile(r"\b(no|nope|not|never|don't|do not|haven't|have not|didn't|did not|nobody|nothing|"
                 r"i'm not aware|unaware)\b")
MIN_PREFIX = 5


def words(text: str) -> list[str]:
    """Lower-case words, apostrophes inside words kept ("don't"), possessive 's dropped."""
    return [w[:-2] if w.endswith("'s") else w for w in _WORD.findall(text.lower().replace("’", "'"))]


def content_words(text: str, *, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """Distinct words of `text` worth checking for, in order: not stop words, not digits, at least 3 letters,
    and not among `exclude` (names the question already gives, the town's name)."""
    excluded = {w for e in exclude for w in words(e)}
    found: dict[str, None] = {}
    for w in words(text):
        if len(w) >= 3 and not w.isdigit() and w not in STOP_WORDS and w not in excluded:
            found[w] = None
    return tuple(found)


def word_match(a: str, b: str) -> bool:
    """Same word up to its ending: a common prefix of MIN_PREFIX letters, or all of the shorter word."""
    need = min(MIN_PREFIX, len(a), len(b))
    return a[:need] == b[:need] and (need == MIN_PREFIX or len(a) == len(b) or need >= 4)


def mentions(answer: str, keywords: Sequence[str]) -> list[str]:
    """The keywords (single words) that some word of `answer` matches."""
    said = set(words(answer))
    return [k for k in keywords if any(word_match(k, w) for w in said)]


def polarity(answer: str) -> Polarity | None:
    """'yes' or 'no' by whichever signal comes first in the first sentence; None when there is neither."""
    first = re.split(r"(?<=[.!?])\s", answer.strip().lower().replace("’", "'"), maxsplit=1)[0]
    yes, no = _YES.search(first), _NO.search(first)
    if yes is None and no is None:
        return None
    if yes is None:
        return "no"
    if no is None:
        return "yes"
    return "yes" if yes.start() < no.start() else "no"


@dataclass(frozen=True, slots=True)
class Check:
    """What a right answer shows: `polarity` (None = not a yes/no question) and, when `keywords` is not empty,
    at least one of them. A 'no' answer needs no keywords (there is nothing to name)."""

    keywords: tuple[str, ...] = ()
    polarity: Polarity | None = None

    def __post_init__(self) -> None:
        if not self.keywords and self.polarity is None:
            raise ValueError("a check needs keywords, a polarity, or both")

    def passes(self, answer: str) -> bool:
        if self.polarity is not None and polarity(answer) != self.polarity:
            return False
        if self.polarity == "no" or not self.keywords:
            return True
        return bool(mentions(answer, self.keywords))

    def describe(self) -> str:
        parts: list[str] = [self.polarity] if self.polarity else []
        if self.keywords and self.polarity != "no":
            parts.append("any of " + ", ".join(self.keywords))
        return " + ".join(parts)
