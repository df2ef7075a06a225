"""Incremental detokenisation with stop strings, per request.

Each step re-decodes the request's output ids (cheap at these lengths, and exact for tokenizers whose
pieces merge across token boundaries), then decides how much text is safe to emit: text ending in an
incomplete UTF-8 character (U+FFFD) or in a possible beginning of a stop string is held back until the next
token settles it, so streamed deltas never contain a stop string nor need to be retracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TextState:
    emitted: str = ""
    """Text already handed out (the concatenation of all new_text deltas)."""
    stopped: bool = False


def update_text(tokenizer: Any, output_ids: list[int], stops: tuple[str, ...], state: TextState, *, final: bool) -> str:
    """Advance `state` for the current output ids and return the new text delta.

    Sets state.stopped when a stop string appears; the text is cut before it.
    """
    if tokenizer is None:
        return ""
    full = tokenizer.decode(output_ids, skip_special_tokens=True)
    if stops:
        # Search only the tail that could hold a new match (plus the length of the longest stop).
        from_index = max(len(state.emitted) - max(len(s) for s in stops), 0)
        cut = min((i for i in (full.find(s, from_index) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            full, final = full[:cut], True
            state.stopped = True
    if not final:
        full = _hold_back(full, stops)
    if not full.startswith(state.emitted):
        # A later token changed how earlier bytes decode; emit nothing until the text is consistent again.
        return ""
    delta = full[len(state.emitted) :]
    state.emitted = full
    return delta


def _hold_back(text: str, stops: tuple[str, ...]) -> str:
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:k]):
                end = min(end, len(text[:end]) - k)
                break
    return text[:end]
