"""A looping answer is cut before its first repeat and the model is stopped there; answers that only look alike
(list items with a shared opening, short replies, code) are left whole. Scripted replies stand in for a small
model's loops, which a 135M model produces but not on demand."""

from __future__ import annotations

import math

import pytest

from ragsvc.answer.answerer import Answerer, AnswerOptions
from ragsvc.answer.repetition import NGRAM_WORDS, RepeatWatch, repeat_start, without_repeat
from ragsvc.answer.types import FlareOptions
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.types import ChunkId, DocumentId, Hit

LOOP = ("Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests. "
        "It shares blocks between requests. It shares blocks between requests. It shares blocks")
KEPT = "Paged attention saves memory by allocating the cache in blocks [1]. It shares blocks between requests."


@pytest.mark.parametrize(("text", "kept"), [
    (LOOP, KEPT),
    # a loop with no sentence ends: cut where the run of words comes round again
    (" ".join(["the block table maps positions to blocks"] * 4), "the block table maps positions to blocks"),
    # a sentence that restarts midway into an earlier one: the whole sentence goes, not half of it
    ("It is fast. The scheduler decides which sequences run and which wait for blocks to free. Then the "
     "scheduler decides which sequences run and which wait for blocks to",
     "It is fast. The scheduler decides which sequences run and which wait for blocks to free."),
    # the same sentence with other citations, case and spacing is the same sentence
    ("Blocks are shared between requests [1]. Blocks  are SHARED between requests [2].",
     "Blocks are shared between requests [1]."),
])
def test_a_loop_is_cut_before_its_first_repeat(text, kept):
    assert without_repeat(text) == (kept, True)


@pytest.mark.parametrize("text", [
    "It supports transactions. It supports JSON columns. It supports list columns. It supports fast scans.",
    "Yes. Yes. No. No.",  # too short to count
    "Here is how:\n```python\nfor i in range(n):\n    total += i\nfor i in range(n):\n    total += i\n```\nDone.",
    "The first block holds tokens 0 to 15 and the second block holds tokens 16 to 31 of the sequence.",
    "",
])
def test_text_that_only_looks_alike_is_left_whole(text):
    assert repeat_start(text) is None and without_repeat(text) == (text, False)


def test_the_watch_fires_once_the_repeat_is_written_not_before():
    watch = RepeatWatch()
    words = LOOP.split(" ")
    fired = [n for n in range(1, len(words) + 1) if watch(" ".join(words[:n]))]
    second = len(KEPT.split(" ")) + len(["It", "shares", "blocks", "between", "requests."])
    assert fired and fired[0] == second  # the moment the repeated sentence ends


def test_the_watch_looks_at_sentence_ends_or_every_ngram_of_words(monkeypatch):
    import ragsvc.answer.repetition as repetition

    looks = []
    real = repetition.repeat_start
    monkeypatch.setattr(repetition, "repeat_start", lambda text: looks.append(text) or real(text))
    watch = RepeatWatch()
    words = [f"w{i}" for i in range(10 * NGRAM_WORDS)]  # no sentence end, no repeat
    assert not any(watch(" ".join(words[:n])) for n in range(1, len(words) + 1))
    assert len(looks) == 10


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
