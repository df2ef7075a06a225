"""Context packing: retrieved hits (best first) -> numbered passages for a prompt, within a token budget,
with citations that map each number back to the chunk and the span of it that was included.

Stages, in order:
1. Near-duplicate removal. Overlapping chunks and re-ingested copies waste the budget on repeats. Two hits
   are near-duplicates when the Jaccard similarity of their word-shingle sets (lowercased words, `shingle`
   words per shingle) is at least `dedupe_threshold`; the better-ranked one is kept. A text shorter than one
   shingle is a single shingle of all its words, so short exact repeats still match.
2. Fitting the budget. Passages are taken in rank order, so the context is always a prefix of the ranking
   (a lower-ranked short passage never displaces a higher-ranked long one). The first passage that does not
   fit whole is truncated at a word boundary to the longest prefix that fits, when at least
   `min_truncated_tokens` of budget are left for it; otherwise it is dropped. Packing stops there. The budget
   covers the whole rendered text (numbers and separators included), counted by the given token counter on
   the rendered text itself: tokenizers are not additive across boundaries, so summing passage counts could
   overshoot.
3. "Lost in the middle" order (Liu et al., 2023: models use the start and end of a long context best):
   rank 1 first, rank 2 last, rank 3 second, rank 4 second to last, ... so the weakest passages meet in the
   middle.
4. Numbering in reading order, [1]..[n], each passage rendered as "[i] text" and separated by a blank line.

`cited(answer, packed)` maps the "[2]" / "[1, 3]" / "[2-4]" markers of a generated answer back to citations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragsvc.errors import InvalidInput
from ragsvc.types import ChunkId, DocumentId, Hit

TokenCounter = Callable[[str], int]
SEPARATOR = "\n\n"
_WORD = re.compile(r"\w+")
_SPAN_END = re.compile(r"\S+")
_CITE = re.compile(r"\[\s*(\d+(?:\s*[-\u2013]\s*\d+)?(?:\s*[,;]\s*\d+(?:\s*[-\u2013]\s*\d+)?)*)\s*\]")


def approx_tokens(text: str) -> int:
    """A cheap, deliberately high token estimate: the larger of the word count and chars / 4.

    English BPE/WordPiece vocabularies average about 4 characters and 0.75 words per token; taking the larger
    bound errs towards a shorter context rather than an overflowing prompt. Pass a real tokenizer's length
    when the budget is tight.
    """
    return max(len(text.split()), math.ceil(len(text) / 4))


@dataclass(frozen=True, slots=True)
class Citation:
    """Passage [number] of a packed context: which chunk it came from and what of the chunk was included."""

    number: int
    chunk_id: ChunkId
    document_id: DocumentId
    start_char: int
    """Start of the included text inside the chunk's text (always 0: passages are cut only at the end)."""
    end_char: int
    """End (exclusive) of the included text inside the chunk's text; < len(chunk text) when truncated."""
    text: str
    """The included text, `hit.text[start_char:end_char]`."""
    rank: int
    """1-based rank of the hit in the input list."""
    score: float
    truncated: bool


@dataclass(frozen=True, slots=True)
class PackedContext:
    text: str
    """The rendered passages, "[1] ...\\n\\n[2] ...", ready to put in a prompt."""
    citations: list[Citation]
    """One per passage, in number order (citations[i].number == i + 1)."""
    num_tokens: int
    """Tokens of `text` by the counter used for packing."""
    duplicates: tuple[ChunkId, ...]
    """Hits removed as near-duplicates of better-ranked ones."""
    over_budget: tuple[ChunkId, ...]
    """Hits left out (whole) because the budget ran out."""

    def citation(self, number: int) -> Citation | None:
        return self.citations[number - 1] if 1 <= number <= len(self.citations) else None


# --- near-duplicates --------------------------------------------------------------------------------------


def shingles(text: str, *, size: int = 3) -> frozenset[tuple[str, ...]]:
    """The set of `size`-word windows of the lowercased words of `text` (one window if it is shorter)."""
    words = tuple(w.lower() for w in _WORD.findall(text))
    if len(words) <= size:
        return frozenset([words]) if words else frozenset()
    return frozenset(words[i : i + size] for i in range(len(words) - size + 1))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def dedupe(hits: Sequence[Hit], *, threshold: float = 0.8, shingle: int = 3) -> tuple[list[Hit], list[Hit]]:
    """(kept, removed): a hit is removed when it repeats the chunk id of, or is a near-duplicate of
    (Jaccard >= threshold), a better-ranked kept hit. O(n^2) in the hits, which number tens here."""
    kept: list[tuple[Hit, frozenset[tuple[str, ...]]]] = []
    removed: list[Hit] = []
    for hit in hits:
        sh = shingles(hit.text, size=shingle)
        if any(hit.chunk_id == k.chunk_id or jaccard(sh, ksh) >= threshold for k, ksh in kept):
            removed.append(hit)
        else:
            kept.append((hit, sh))
    return [k for k, _ in kept], removed


# --- ordering and rendering -------------------------------------------------------------------------------


def lost_in_the_middle(items: Sequence[object]) -> list[int]:
    """Indexes of `items` (best first) in reading order: 0 first, 1 last, 2 second, 3 second to last, ..."""
    front = list(range(0, len(items), 2))
    back = list(range(1, len(items), 2))
    return front + back[::-1]


def render(passages: Sequence[str], *, separator: str = SEPARATOR) -> str:
    """Passages already in reading order -> "[1] p1<sep>[2] p2..."."""
    return separator.join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))


def _render_ranked(texts: Sequence[str], separator: str) -> str:
    return render([texts[i] for i in lost_in_the_middle(texts)], separator=separator)


def _longest_fitting_prefix(text: str, fits: Callable[[str], bool]) -> int:
    """The largest word-boundary end e with fits(text[:e]), or 0: binary search (fits is monotone in e)."""
    ends = [m.end() for m in _SPAN_END.finditer(text)]
    lo, hi = 0, len(ends)  # invariant: ends[:lo] fit (or lo == 0), ends[hi:] do not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(text[: ends[mid - 1]]):
            lo = mid
        else:
            hi = mid - 1
    return ends[lo - 1] if lo else 0


# --- packing ----------------------------------------------------------------------------------------------


def pack_context(
    hits: Sequence[Hit], *, max_tokens: int, count_tokens: TokenCounter = approx_tokens,
    dedupe_threshold: float = 0.8, shingle: int = 3, min_truncated_tokens: int = 32, separator: str = SEPARATOR,
) -> PackedContext:
    """Pack `hits` (best first) into at most `max_tokens` tokens; see the module docstring for each stage."""
    if max_tokens < 1:
        raise InvalidInput(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0.0 < dedupe_threshold <= 1.0:
        raise InvalidInput(f"dedupe_threshold must be in (0, 1] (1 = exact repeats only), got {dedupe_threshold}")
    ranks: dict[int, int] = {}
    for rank, hit in enumerate(hits, start=1):
        ranks.setdefault(id(hit), rank)  # the same Hit object twice: its better rank
    unique, removed = dedupe(hits, threshold=dedupe_threshold, shingle=shingle)

    def fits(texts: Sequence[str]) -> bool:
        return count_tokens(_render_ranked(texts, separator)) <= max_tokens

    texts: list[str] = []
    for hit in unique:
        if fits([*texts, hit.text]):
            texts.append(hit.text)
            continue
        base = count_tokens(_render_ranked(texts, separator)) if texts else 0
        if max_tokens - base >= min_truncated_tokens:
            end = _longest_fitting_prefix(hit.text, lambda prefix: fits([*texts, prefix]))
            if end > 0:
                texts.append(hit.text[:end])
        break
    chosen = unique[: len(texts)]
    order = lost_in_the_middle(chosen)
    citations = [
        Citation(number=n, chunk_id=chosen[i].chunk_id, document_id=chosen[i].document_id, start_char=0,
                 end_char=len(texts[i]), text=texts[i], rank=ranks[id(chosen[i])], score=chosen[i].score,
                 truncated=len(texts[i]) < len(chosen[i].text))
        for n, i in enumerate(order, start=1)
    ]
    text = render([c.text for c in citations], separator=separator)
    return PackedContext(
        text=text, citations=citations, num_tokens=count_tokens(text) if text else 0,
        duplicates=tuple(h.chunk_id for h in removed), over_budget=tuple(h.chunk_id for h in unique[len(texts):]),
    )


# --- citations in answers ---------------------------------------------------------------------------------


def cited_numbers(answer: str) -> list[int]:
    """Numbers cited in `answer` as [2], [1, 3], [1; 3] or [2-4], in order of first mention, each once."""
    numbers: list[int] = []
    for match in _CITE.finditer(answer):
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            bounds = [int(b) for b in re.split(r"\s*[-\u2013]\s*", part)]
            lo, hi = bounds[0], bounds[-1]
            span = range(lo, hi + 1) if 0 <= hi - lo <= 100 else (lo, hi)  # "[1-99999]" is no real citation
            for n in span:
                if n not in numbers:
                    numbers.append(n)
    return numbers


def cited(answer: str, packed: PackedContext) -> list[Citation]:
    """The citations `answer` refers to, in order of first mention; numbers with no passage are ignored."""
    return [c for n in cited_numbers(answer) if (c := packed.citation(n)) is not None]
