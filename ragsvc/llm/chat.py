"""Rendering chat messages with a model's template, including continuing a reply the caller began.

A message list that ends with an assistant message asks the model to continue that message (the template's
`continue_final_message`, as vLLM names it) instead of starting a new turn: FLARE writes an answer one
sentence at a time this way, and every round's prompt renders the earlier rounds' text identically, so an
engine's prefix cache serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def continues_reply(messages: Sequence[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "assistant"


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt text for `messages`: a new assistant turn, or the continuation of the final assistant one."""
    if continues_reply(messages):
        return str(tokenizer.apply_chat_template(list(messages), tokenize=False, continue_final_message=True))
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))
