"""Token-aware chunking with overlap for plain text and Markdown. Pure: it takes token character offsets.

Chunks are exact character spans of the document (so citations can point into the source). A window of at
most `max_tokens` tokens ends at the best boundary in its second half: a Markdown heading, then a blank
line, then a line break, then a sentence end, then any token. The next window starts `overlap_tokens`
before that end, so a sentence cut at a boundary still appears whole in one of the two chunks.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

_HEADING = re.compile(r"^#{1,6}[^\S\n]+(.*)$", re.MULTILINE)
"""An ATX heading line; its closing #s are stripped in Python. A pattern that strips them itself
(`\s+(.+?)\s*#*\s*$`) backtracks cubically on a heading line with a long run of spaces: 2,000 spaces take 27 s,
with the GIL of the server ingesting the document held throughout."""
_SENTENCE_END = (".", "!", "?", ":", ";", "。")


@dataclass(frozen=True, slots=True)
class Span:
    start_char: int
    end_char: int
    section: str | None = None
    """The nearest Markdown heading above the span (None for plain text or before the first heading)."""


def chunk_spans(
    text: str,
    offsets: Sequence[tuple[int, int]],
    *,
    max_tokens: int,
    overlap_tokens: int,
    markdown: bool = False,
) -> list[Span]:
    """Cut `text` into spans of at most `max_tokens` tokens; `offsets` are the tokens' (start, end) chars."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens} with max {max_tokens}")
    offsets = [(s, e) for s, e in offsets if e > s]
    if not offsets:
        return []
    headings = _headings(text) if markdown else []
    scores = _boundary_scores(text, offsets, markdown=markdown)
    spans: list[Span] = []
    start, n = 0, len(offsets)
    while start < n:
        end = min(start + max_tokens, n)
        if end < n:
            end = _best_break(scores, lo=start + max(1, max_tokens // 2), hi=end)
        begin_char, end_char = offsets[start][0], offsets[end - 1][1]
        spans.append(Span(begin_char, end_char, _section_at(headings, begin_char)))
        if end >= n:
            break
        start = max(end - overlap_tokens, start + 1)
    return spans


def _boundary_scores(text: str, offsets: list[tuple[int, int]], *, markdown: bool) -> list[int]:
    """scores[b] rates a cut before token b: 4 heading, 3 blank line, 2 newline, 1 sentence end, 0 none."""
    scores = [0] * (len(offsets) + 1)
    for b in range(1, len(offsets)):
        gap = text[offsets[b - 1][1] : offsets[b][0]]
        if markdown and "\n" in gap and text.startswith("#", offsets[b][0]):
            scores[b] = 4
        elif "\n\n" in gap or "\n\r\n" in gap:
            scores[b] = 3
        elif "\n" in gap:
            scores[b] = 2
        elif text[offsets[b - 1][1] - 1] in _SENTENCE_END and gap:
            scores[b] = 1
    return scores


def _best_break(scores: list[int], *, lo: int, hi: int) -> int:
    """The latest token index in [lo, hi] with the highest boundary score (hi when nothing is better)."""
    best, best_score = hi, scores[hi] if hi < len(scores) else 0
    for b in range(hi, lo - 1, -1):
        if scores[b] > best_score:
            best, best_score = b, scores[b]
    return best


def _headings(text: str) -> list[tuple[int, str]]:
    """(start, title) of each Markdown heading with a title, in order."""
    found = []
    for m in _HEADING.finditer(text):
        title = m.group(1).rstrip().rstrip("#").rstrip()
        if title:
            found.append((m.start(), title))
    return found


def _section_at(headings: list[tuple[int, str]], position: int) -> str | None:
    """The title of the last heading starting at or before `position` (bisected: a long document can hold
    thousands of headings and as many chunks)."""
    i = bisect_right(headings, position, key=lambda h: h[0])
    return headings[i - 1][1] if i else None
