"""Where generated text starts repeating itself, so a caller can stop the model there.

Small models decoding greedily fall into loops: SmolLM2-135M, the packaged default, answers most questions over
the bundled sample with a sentence or two and then writes the same sentence until max_tokens runs out
("It uses a technique called X. It uses a technique called X. ..."). The loop adds nothing a reader can use,
costs most of the decoding time, and buries the useful start under copies. Penalising repeated tokens while
sampling would change what the model writes from its first token and would fight the copying from passages a
grounded answer needs; cutting at the first repeat changes nothing before it.

Four signs of a loop, all conservative so that a legitimate answer is never cut:
- a sentence of at least MIN_SENTENCE_WORDS words that is, word for word, one already written (case, spacing,
  punctuation and citation markers aside);
- a run of NGRAM_WORDS words that already occurred earlier in the text, which catches loops without sentence
  ends and long sentences that restart midway; the cut then goes back to the start of that sentence;
- a unit of one to four characters written over and over inside a word or a line, RUN_CHARS characters or
  more ("It is set to 1000000000…", "!!!!!!…"), which the word rules cannot see since it is one long word.
  Letters or digits: the cut goes back to the start of the sentence (in the first sentence, of the word), so
  no truncated number is left; punctuation: one unit is kept. A line that is the run alone (a Markdown rule
  or heading underline) is not a loop;
- CITATION_RUN or more citation markers in a row with nothing but spaces and commas between them ("[1] [2] [3]
  [4] [5] [6] [7] [8] ..."): a small model asked to cite passages may count upwards for ever, past the passages
  it was shown. No sentence cites that many; the cut goes to the run's start.
Lists whose items share an opening ("It supports X. It supports Y.") repeat neither, short sentences such
as "Yes." are too short to count, and fenced code, where lines repeat for good reason, is not read.

Chinese and Japanese are written without spaces, so there each character is a word of its own, counted as
half a word (a word of English runs to about two of them): a repeated sentence needs eight characters, a
repeated run twenty-four, so a long name written twice is not a loop. Their full-width 。！？ end sentences.
"""

from __future__ import annotations

import re

from ragsvc.cjk import CJK_CHARS

MIN_SENTENCE_WORDS = 4
NGRAM_WORDS = 12

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|[。！？]+|\n")
_CJK_CHAR = re.compile(f"[{CJK_CHARS}]")
_WORD = re.compile(rf"[{CJK_CHARS}]|[^\W{CJK_CHARS}]+")
"""A word: one kana or ideograph, or a run of other word characters."""
RUN_CHARS = 48
_RUN = re.compile(r"(.{1,4}?)\1{11,}")
"""A unit of one to four characters repeated at least twelve times in a row (no newlines)."""
_LONG_WORD = re.compile(rf"\S{{{RUN_CHARS},}}")
"""RUN_CHARS characters without a space: where a run may have begun that the word counts do not see."""
_CITATION = re.compile(r"\[\d+\]")
CITATION_RUN = 8
_CITATION_RUN = re.compile(rf"(?:\[\d+\][\s,;]*){{{CITATION_RUN},}}")
"""CITATION_RUN or more [n] markers in a row, with only spaces, commas or semicolons between them."""
_CODE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
"""A fenced code block (or one still open at the end): code repeats lines legitimately, so it is not read."""


def _without_code(text: str) -> str:
    """`text` with fenced code blanked out, offsets kept."""
    return _CODE.sub(lambda m: " " * len(m.group()), text)


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each complete sentence: ended by . ! ? before a space or the end, or by a newline."""
    spans = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    return spans


def _sentence_start(text: str, offset: int) -> int:
    """The start of the sentence holding `offset` (its first word), so a cut never leaves half a sentence;
    `offset` itself when that sentence is the text's first (a loop that never ended a sentence)."""
    begin = 0
    for _start, end in _sentences(text):
        if end > offset:
            break
        begin = end
    first = _WORD.search(text, begin)
    return offset if begin == 0 or first is None or first.start() > offset else first.start()


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(_CITATION.sub(lambda m: " " * len(m.group()), text)))


def _weight(word: str) -> int:
    """A word's length in half-words: 1 for a kana or ideograph, 2 for a word of a spaced script."""
    return 1 if len(word) == 1 and _CJK_CHAR.match(word) else 2


def _runs(words: list[str], weight: int) -> list[tuple[int, tuple[str, ...]]]:
    """(index, run) for every run of consecutive words, from each word on, just long enough to weigh `weight`
    half-words; runs that would pass the end are not made."""
    weights = [_weight(w) for w in words]
    runs = []
    end = total = 0
    for i in range(len(words)):
        while end < len(words) and total < weight:
            total += weights[end]
            end += 1
        if total < weight:
            break
        runs.append((i, tuple(words[i:end])))
        total -= weights[i]
    return runs


def repeat_start(text: str) -> int | None:
    """The offset in `text` where it starts to repeat what it already said, or None. Only complete sentences
    count for the sentence rule: a sentence still being written may yet diverge from the earlier one."""
    text = _without_code(text)
    starts: list[int] = []
    seen: set[tuple[str, ...]] = set()
    for begin, end in _sentences(text):
        found = _words(text[begin:end])
        words = tuple(w.group().lower() for w in found)
        if sum(_weight(w) for w in words) < 2 * MIN_SENTENCE_WORDS:
            continue
        if words in seen:
            starts.append(begin + found[0].start())
            break
        seen.add(words)
    words_in = _words(text)
    grams: set[tuple[str, ...]] = set()
    for i, gram in _runs([w.group().lower() for w in words_in], 2 * NGRAM_WORDS):
        if gram in grams:
            starts.append(_sentence_start(text, words_in[i].start()))
            break
        grams.add(gram)
    run = _character_run(text)
    if run is not None:
        starts.append(run)
    citations = _CITATION_RUN.search(text)
    if citations is not None:
        starts.append(citations.start())
    return min(starts) if starts else None


def _character_run(text: str) -> int | None:
    """Where the first run of one repeated short unit of RUN_CHARS or more starts its word's sentence (its
    word, in the first sentence), or None. Runs of whitespace, and runs that fill their line alone, do not
    count."""
    for match in _RUN.finditer(text):
        if len(match.group()) < RUN_CHARS or not match.group(1).strip():
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        line = text[line_start: len(text) if line_end < 0 else line_end]
        if line.strip() == match.group().strip():
            continue  # a rule or an underline: ----- or =====
        unit = match.group(1)
        if not any(c.isalnum() for c in unit):  # "!!!!", "....": keep one, the sentence before it stands
            return match.start() + len(unit)
        word = match.start()
        while word > line_start and not text[word - 1].isspace():
            word -= 1
        return _sentence_start(text, word)
    return None


def without_repeat(text: str) -> tuple[str, bool]:
    """`text` cut where it starts repeating itself (trailing space removed), and whether it was cut."""
    start = repeat_start(text)
    return (text, False) if start is None else (text[:start].rstrip(), True)


class RepeatWatch:
    """An `until` for a streamed model call: True once the text repeats itself. It looks again only when the
    text has ended a sentence, grown by NGRAM_WORDS words, or written RUN_CHARS characters without a space
    since its last look, so a long answer costs a few hundred looks, not one per token."""

    def __init__(self) -> None:
        self._looked_at = 0
        """Characters of the text at the last look."""

    def __call__(self, text: str, _tokens: object = None) -> bool:
        fresh = text[max(0, self._looked_at - 1):]
        if (not _SENTENCE_END.search(fresh) and not _LONG_WORD.search(fresh)
                and sum(_weight(w) for w in _WORD.findall(fresh)) < 2 * NGRAM_WORDS):
            return False
        self._looked_at = len(text)
        return repeat_start(text) is not None
