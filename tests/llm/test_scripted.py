"""ScriptedGenerator: the scripted replies other parts' tests use for decision logic."""

from __future__ import annotations

import math

import pytest

from ragsvc.llm import Generation, Generator, Usage
from ragsvc.llm.scripted import ScriptedGenerator


def test_replies_in_order_with_logprobs_and_records_calls():
    gen = ScriptedGenerator(["yes it is", "no"], confidence=0.5)
    first = gen.generate("q1", logprobs=True)
    assert first.text == "yes it is" and [t.token for t in first.tokens] == ["yes", " it", " is"]
    assert all(t.logprob == pytest.approx(math.log(0.5)) for t in first.tokens)
    assert gen.generate("q2").tokens == ()
    assert [p for p, _ in gen.calls] == ["q1", "q2"]
    with pytest.raises(AssertionError, match="ran out"):
        gen.generate("q3")


def test_function_script_max_tokens_and_stream():
    canned = Generation(text="x", tokens=(), finish_reason="stop", usage=Usage(1, 1))
    gen = ScriptedGenerator(lambda p: canned if p == "canned" else f"echo {p}")
    assert isinstance(gen, Generator)
    assert gen.generate("canned") is canned
    cut = gen.generate("a b c", max_tokens=2)
    assert cut.text == "echo a" and cut.finish_reason == "length"
    assert "".join(c.text for c in gen.stream("z")) == "echo z"
