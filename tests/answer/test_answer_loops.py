"""A looping answer is cut before its first repeat and the model is stopped there (llm/repetition.py). Scripted
replies stand in for a small model's loops, which a 135M model produces but not on demand."""

from __future__ import annotations

import math

from ragsvc.answer.answerer import Answerer, AnswerOptions
from ragsvc.answer.types import FlareOptions
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.types import ChunkId, DocumentId, Hit

LOOP = ("Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests. "
        "It shares blocks between requests. It shares blocks between requests. It shares blocks")
KEPT = "Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests."


def _tokens(text: str) -> Generation:
    pieces = [" " + w for w in text.split(" ")]  # an engine's tokens carry the space before each word
    tokens = tuple(TokenLogprob(token=p, logprob=math.log(0.9)) for p in pieces)
    return Generation(text="".join(pieces), tokens=tokens, finish_reason="length",
                      usage=Usage(prompt_tokens=40, completion_tokens=len(tokens)))


class CountingGenerator(ScriptedGenerator):
    """Counts the chunks the answerer read, to show the loop stopped the model rather than being trimmed after."""

    def __init__(self, script) -> None:
        super().__init__(script)
        self.chunks_read = 0

    def stream(self, prompt, **kwargs):
        for chunk in super().stream(prompt, **kwargs):
            self.chunks_read += 1
            yield chunk


def retrieve(query: str) -> tuple[list[Hit], dict[str, float]]:
    return [Hit(ChunkId(1), DocumentId("paged"), "Paged attention allocates the KV cache in blocks.", 1.0)], {}


def test_a_looping_answer_stops_the_model_and_ends_before_the_repeat():
    generator = CountingGenerator([_tokens(LOOP + " between requests." * 40)])
    events = []
    answer = Answerer(generator, retrieve, on_event=events.append).answer("How does paged attention save memory?")
    assert answer.text == KEPT and answer.finish_reason == "repetition"
    assert [c.document_id for c in answer.citations] == ["paged"]
    assert generator.chunks_read < len(KEPT.split(" ")) + 10  # stopped a sentence after the repeat began
    # the stream was left before its usage: the tokens are counted from the pieces that arrived
    assert answer.completion_tokens == generator.chunks_read
    assert "".join(e.text for e in events if e.kind == "text").strip().startswith(KEPT)


def test_an_answer_without_a_loop_is_kept_whole():
    text = "Paged attention allocates the cache in blocks [1]. Requests with one prompt share blocks."
    answer = Answerer(ScriptedGenerator([_tokens(text)]), retrieve).answer("How?")
    assert answer.text == text and answer.finish_reason == "length"  # the scripted reply says length


def test_flare_stops_at_a_sentence_it_already_wrote():
    sentences = [" Paged attention allocates the cache in blocks.", " Requests with one prompt share blocks.",
                 " Paged attention allocates the cache in blocks."]  # a fourth round would run out of script
    generator = ScriptedGenerator([_tokens(s.strip()) for s in sentences])
    answer = Answerer(generator, retrieve, options=AnswerOptions()).answer(
        "How?", flare=FlareOptions(theta=0.5, max_rounds=10))
    assert answer.text == "Paged attention allocates the cache in blocks. Requests with one prompt share blocks."
    assert answer.finish_reason == "repetition" and len(generator.calls) == 3
