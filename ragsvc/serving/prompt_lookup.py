"""Prompt-lookup proposals: guess a sequence's next tokens from an earlier occurrence of its own tail.

RAG answers and agent replies copy spans of their prompt (names, titles, whole clauses of a retrieved passage),
so when the last few tokens of a sequence appeared before in its prompt or output, the tokens that followed
them there are a cheap guess at what comes next. No draft model: the guess costs a search over the token ids,
and the target model checks it in the same forward pass that produces its next token (`speculative.py`).

The longest tail n-gram in [min_ngram, max_ngram] with an earlier occurrence wins (a longer match is more
likely to continue the same way). Among occurrences of that n-gram the latest with a full proposal after it
wins, because the text nearest the end (the answer so far, the passage being quoted) is the likeliest to be
copied again.

Pure numpy over the ids; vectorised so a 2,000-token context costs tens of microseconds, far below a forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def propose(
    token_ids: Sequence[int], *, num_tokens: int, min_ngram: int = 2, max_ngram: int = 4
) -> list[int]:
    """Up to `num_tokens` ids that followed the latest earlier occurrence of the longest matching tail n-gram.

    Returns [] when no tail of length >= min_ngram occurred before or num_tokens < 1. The proposal may be
    shorter than num_tokens when the occurrence sits near the end of the sequence.
    """
    if min_ngram < 1 or max_ngram < min_ngram:
        raise ValueError(f"n-gram bounds must satisfy 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
    n_total = len(token_ids)
    if num_tokens < 1 or n_total <= min_ngram:
        return []
    ids = np.asarray(token_ids, dtype=np.int64)
    # Candidate end positions of an earlier occurrence: where the last token occurs, excluding the tail itself.
    ends = np.flatnonzero(ids[:-1] == ids[-1])  # (candidates,)
    if ends.size == 0:
        return []
    length = np.zeros(ends.size, dtype=np.int64)  # matched tail length at each candidate, grown one step at a time
    alive = np.ones(ends.size, dtype=bool)
    for offset in range(max_ngram):
        pos = ends - offset
        ok = alive & (pos >= 0)
        ok[ok] = ids[pos[ok]] == ids[n_total - 1 - offset]
        length += ok
        alive = ok
        if not alive.any():
            break
    best = int(length.max())
    if best < min_ngram:
        return []
    matches = ends[length == best]
    full = matches[matches + num_tokens < n_total]
    # The latest occurrence with num_tokens after it; failing that, the one with the most after it (in a
    # repeating run the latest occurrence abuts the tail and would propose a single token).
    end = int(full[-1] if full.size else matches[0])
    return [int(t) for t in ids[end + 1 : end + 1 + num_tokens]]
