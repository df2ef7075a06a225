"""Evidence for insights a model wrote without citing statement numbers.

The insight prompt asks for each insight to end with the numbers of the statements it rests on. Larger models
do; a 135M model writes insight lines ("Jonah is a restless person who is always trying new things") and never a
number. Dropping those lines would leave a small model's agent with no reflections at all, so the ablation that
removes reflections would remove nothing. Instead, an uncited line gets the statements it is closest to as its
evidence: the prompt's statements (the records retrieved for the question), ranked by cosine similarity of
their embeddings with the insight's, the best `max_evidence` of those at or above `min_similarity`. A line that
is not an insight is left out first: a question (the question echoed back), a line that repeats the prompt's
own wording ("the most important insight you could infer..."), a header ("Insights:"), or a copy of one of the
statements. A line with no statement close enough is dropped, as an uncited one was before.

Such reflections say how their evidence was found (`Insight.evidence_by` in agents/reflection.py: "cited" or
"similarity", stored in the reflection's metadata), so a reader can tell the model's citations from the
nearest-statement ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ragsvc.embed.embedder import Embedder

MIN_SIMILARITY = 0.35
MAX_EVIDENCE = 3
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):])\s*")
_PROMPT_ECHO = re.compile(r"\b(?:high-level|most important (?:question|insight)|insights? (?:about|you could)|"
                          r"statements? (?:above|about))\b", re.IGNORECASE)


def insight_lines(text: str, statements: Sequence[str], *, limit: int) -> list[str]:
    """The lines of a reply that read as insights (see the module docstring), numbering stripped, each once."""
    copies = {_words(s) for s in statements}
    found: list[str] = []
    for raw in text.splitlines():
        line = _NUMBERING.sub("", raw).strip().strip('"').strip()
        line = line[:-1] if line.endswith(".") and not line.endswith("..") else line
        words = _words(line)
        if (len(words.split()) < 4 or line.endswith(("?", ":")) or _PROMPT_ECHO.search(line)
                or any(words in c or c in words for c in copies) or line in found):
            continue
        found.append(line)
        if len(found) == limit:
            break
    return found


def nearest_evidence(insight: np.ndarray, statements: np.ndarray, ids: Sequence[int], *,
                     max_evidence: int = MAX_EVIDENCE, min_similarity: float = MIN_SIMILARITY) -> tuple[int, ...]:
    """The ids of the statements most similar to `insight` (unit vectors, so a dot product is the cosine), best
    first, at most `max_evidence`, none below `min_similarity`."""
    if len(ids) == 0:
        return ()
    sims = statements @ insight
    order = np.argsort(-sims, kind="stable")[:max_evidence]
    return tuple(int(ids[i]) for i in order if sims[i] >= min_similarity)


def evidence_by_similarity(lines: Sequence[str], statements: Sequence[str], ids: Sequence[int],
                           embedder: Embedder) -> list[tuple[str, tuple[int, ...]]]:
    """(line, the ids of its nearest statements) for each of `lines` that has a statement close enough."""
    if not lines or not statements:
        return []
    vectors = np.asarray(embedder.embed_documents([*lines, *statements]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    found = []
    for i, line in enumerate(lines):
        near = nearest_evidence(vectors[i], vectors[len(lines):], ids)
        if near:
            found.append((line, near))
    return found


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))
