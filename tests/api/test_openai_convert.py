"""How many tokens a completion may write: the request's max_tokens, or the context left, and a clear refusal
when the prompt leaves no room (a prompt over the context once came back as "max_tokens must be at least 1,
got -219007")."""

from __future__ import annotations

import pytest

from ragsvc.api.openai_convert import resolve_max_tokens
from ragsvc.errors import InvalidInput


def test_unset_max_tokens_takes_the_context_left():
    assert resolve_max_tokens(None, prompt_len=100, max_model_len=2048) == 1948
    assert resolve_max_tokens(16, prompt_len=100, max_model_len=2048) == 16


@pytest.mark.parametrize("prompt_len", [2048, 221_055])
def test_a_prompt_that_fills_the_context_is_refused_for_what_it_is(prompt_len):
    with pytest.raises(InvalidInput) as caught:
        resolve_max_tokens(None, prompt_len=prompt_len, max_model_len=2048)
    assert "no room for a reply" in caught.value.message and "Shorten the prompt" in caught.value.message
    assert caught.value.detail == {"param": "messages"}


def test_a_budget_past_the_context_names_max_tokens():
    with pytest.raises(InvalidInput) as caught:
        resolve_max_tokens(100, prompt_len=2000, max_model_len=2048)
    assert caught.value.detail == {"param": "max_tokens"} and "2100 in all" in caught.value.message
