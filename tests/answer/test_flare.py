"""FLARE's decisions with scripted token probabilities: which sentences trigger retrieval, what the masked
query is, how rounds and tokens are bounded, how the prompt keeps its cached prefix, and how a failing
generator surfaces. (A 135M model cannot be relied on to be unsure on cue; the end-to-end test with the real
engine is in test_answer_engine.py.)"""

from __future__ import annotations

import math

import pytest

from ragsvc.answer.answerer import Answerer, AnswerEvent, AnswerOptions
from ragsvc.answer.flare import cut_sentence, low_confidence_spans, low_tokens, masked_query, needs_retrieval
from ragsvc.answer.prompt import INSTRUCTIONS
from ragsvc.answer.types import FlareOptions
from ragsvc.errors import InvalidInput, NotFound, UpstreamError, UpstreamTimeout
from ragsvc.llm.generator import Generation, TokenLogprob, Usage
from ragsvc.llm.scripted import ScriptedGenerator
from ragsvc.types import ChunkId, DocumentId, Hit


def toks(*pairs: tuple[str, float]) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(token=t, logprob=math.log(p)) for t, p in pairs)


def gen(*pairs: tuple[str, float], finish: str = "length") -> Generation:
    tokens = toks(*pairs)
    return Generation(text="".join(t.token for t in tokens), tokens=tokens, finish_reason=finish,
                      usage=Usage(prompt_tokens=100, completion_tokens=len(tokens), cached_tokens=80))


def hit(i: int, text: str) -> Hit:
    return Hit(ChunkId(i), DocumentId(f"doc{i}"), text, 1.0 / i)


CORPUS = {
    "question": [hit(1, "Paged attention keeps the KV cache in fixed-size blocks."),
                 hit(2, "Blocks are allocated on demand as sequences grow.")],
    "vllm": [hit(3, "vLLM introduced paged attention in 2023."), hit(1, "Paged attention keeps the KV cache in "
                                                                        "fixed-size blocks.")],
}


class Retriever:
    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, query: str) -> tuple[list[Hit], dict[str, float]]:
        self.queries.append(query)
        key = "vllm" if query.startswith("It was") or "company" in query else "question"
        return CORPUS[key], {"total_ms": 1.0}


# --- pure decisions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["1", "12", "a", "iv"])
def test_a_list_item_number_is_not_a_sentence(marker):
    s = cut_sentence(toks((marker, 0.2), (".", 0.9), (" Blocks", 0.9), (" grow", 0.9), (".", 0.9), (" Then", 0.9)),
                     finished=False)
    assert s.text == f"{marker}. Blocks grow." and s.complete
    s = cut_sentence(toks(("\n", 0.9), ("2", 0.9), (".", 0.9), ("\n", 0.9), ("Pages", 0.9), ("\n", 0.9)),
                     finished=False)
    assert s.text == "\n2.\nPages" and s.complete
    s = cut_sentence(toks((" The", 0.9), (" answer", 0.9), (" is", 0.9), (" 42", 0.9), (".", 0.9), (" It", 0.9)),
                     finished=False)
    assert s.text == " The answer is 42." and s.complete  # a number ending a sentence still ends it


def test_sentence_is_cut_after_its_end_and_leading_newlines_do_not_end_it():
    s = cut_sentence(toks(("\n", 0.9), (" Blocks", 0.9), (" grow", 0.9), (".", 0.9), (" Then", 0.9)), finished=False)
    assert s.text == "\n Blocks grow." and len(s.tokens) == 4 and s.complete
    s = cut_sentence(toks((" It", 0.9), (" is", 0.9), (" 3", 0.9), (".", 0.9), ("5", 0.9), (" GB", 0.9)),
                     finished=False)
    assert s.text == " It is 3.5 GB" and not s.complete  # a decimal point is no sentence end
    s = cut_sentence(toks((" Yes", 0.9), (".\n\nNext", 0.9)), finished=False)
    assert s.text == " Yes." and len(s.tokens) == 2
    assert cut_sentence(toks((" end", 0.9)), finished=True).complete
    s = cut_sentence(toks(("分页", 0.9), ("注意力", 0.9), ("节省", 0.9), ("内存。", 0.9), ("它", 0.9)), finished=False)
    assert s.text == "分页注意力节省内存。" and len(s.tokens) == 4 and s.complete  # no space after a full-width end


def test_retrieval_is_needed_when_a_word_token_is_below_theta():
    sentence = toks((" vLLM", 0.9), (" came", 0.35), (" out", 0.9), (".", 0.01))
    assert needs_retrieval(sentence, theta=0.4)  # " came" is below 0.4; the "." is not judged
    assert not needs_retrieval(sentence, theta=0.3)
    assert not needs_retrieval(toks((".", 0.01), (" ", 0.01)), theta=0.4)


def test_low_tokens_are_the_word_tokens_below_theta():
    sentence = toks((" It", 0.9), (" came", 0.35), (" in", 0.5), (" 19", 0.2), ("99", 0.1), (".", 0.01))
    assert low_tokens(sentence, theta=0.4) == ["came", "19", "99"]  # the "." is not judged
    assert low_tokens(sentence, theta=0.1) == []


def test_masked_query_drops_tokens_below_beta_and_spans_group_them():
    sentence = toks((" vLLM", 0.9), (" was", 0.95), (" introduced", 0.5), (" in", 0.8), (" 2019", 0.1),
                    (" by", 0.2), (" Google", 0.15), (".", 0.9))
    assert masked_query(sentence, beta=0.4) == "vLLM was introduced in."
    assert masked_query(sentence, beta=0.6) == "vLLM was in."
    assert low_confidence_spans(sentence, beta=0.4) == ["2019 by Google"]


def test_masked_query_masks_whole_words_not_the_unsure_piece_of_one():
    # a sub-word tokenizer splits names: masking only " Jan" would leave the fragment "et"
    sentence = toks((" Jan", 0.2), ("et", 0.95), (" Wal", 0.9), ("do", 0.9), (" [", 0.9), ("2", 0.1), ("]", 0.9))
    assert masked_query(sentence, beta=0.4) == "Waldo []"
    assert masked_query(toks(("WIN", 0.2), ("NER", 0.9)), beta=0.4) == ""
    assert masked_query(toks(("Los", 0.9), ("-", 0.1), ("Angeles", 0.9)), beta=0.4) == "Los-Angeles"
    assert masked_query(toks(("foo ", 0.1), ("bar", 0.9)), beta=0.4) == "bar"  # a trailing space is no word


# --- the FLARE loop ---------------------------------------------------------------------------------------


def test_confident_sentences_are_kept_and_an_unsure_one_is_regenerated_after_retrieval():
    replies = [
        gen((" Paged", 0.9), (" attention", 0.9), (" uses", 0.8), (" blocks", 0.9), (" [1]", 0.9), (".", 0.9),
            (" It", 0.9)),
        gen((" It", 0.9), (" was", 0.9), (" introduced", 0.9), (" by", 0.9), (" Google", 0.1), (".", 0.9)),
        gen((" It", 0.9), (" was", 0.9), (" introduced", 0.9), (" by", 0.9), (" vLLM", 0.9), (" [3]", 0.9),
            (".", 0.9), finish="stop"),
    ]
    generator = ScriptedGenerator(replies)
    retriever = Retriever()
    events: list[AnswerEvent] = []
    answer = Answerer(generator, retriever, on_event=events.append).answer(
        "Who introduced paged attention?", flare=FlareOptions(theta=0.4, beta=0.4))
    assert answer.text == "Paged attention uses blocks [1]. It was introduced by vLLM [3]."
    assert retriever.queries == ["Who introduced paged attention?", "It was introduced by."]
    assert [r.reason for r in answer.retrievals] == ["question", "low_confidence"]
    assert answer.retrievals[1].added == [3]  # chunk 1 was already passage [1]
    assert [g.kind for g in answer.generations] == ["lookahead", "lookahead", "regenerate"]
    # each round reports the tokens that fell below theta: the unsure guess, and nothing once grounded
    assert [g.low_tokens for g in answer.generations] == [[], ["Google"], []]
    assert [c.chunk_id for c in answer.citations] == [1, 3]
    assert answer.finish_reason == "stop"
    assert [e.kind for e in events].count("retrieval") == 2
    assert "".join(e.text for e in events if e.kind == "text") == " Paged attention uses blocks [1]. It was " \
                                                                   "introduced by vLLM [3]."
    prompts = [p for p, _ in generator.calls]
    # the layout keeps the cached prefix: each user turn extends the previous one's passages unchanged, and
    # the answer so far is an assistant turn the model continues
    first_user = prompts[0][0]["content"]
    assert first_user.startswith(INSTRUCTIONS + "Question: Who introduced paged attention?") and len(prompts[0]) == 1
    assert prompts[1][0]["content"] == first_user
    assert prompts[1][1] == {"role": "assistant", "content": "Paged attention uses blocks [1]."}
    passages_so_far = first_user.rsplit("\n\nQuestion:", 1)[0]
    assert prompts[2][0]["content"].startswith(passages_so_far)
    assert prompts[2][0]["content"].endswith("[3] vLLM introduced paged attention in 2023.\n\n"
                                             "Question: Who introduced paged attention?")


def test_an_unsure_sentence_is_kept_when_retrieval_adds_nothing_new():
    replies = [gen((" They", 0.9), (" were", 0.9), (" Google", 0.1), (".", 0.9), finish="stop")]
    generator = ScriptedGenerator(replies)
    retriever = Retriever()
    answer = Answerer(generator, retriever).answer("Who?", flare=FlareOptions())
    assert len(retriever.queries) == 2  # it did retrieve, but the hits were already in the prompt
    assert [g.kind for g in answer.generations] == ["lookahead"] and answer.text == "They were Google."


def test_rounds_and_tokens_are_bounded():
    confident = gen((" More", 0.9), (" text", 0.9), (".", 0.9), (" And", 0.9))
    answer = Answerer(ScriptedGenerator([confident] * 3), Retriever()).answer(
        "q?", flare=FlareOptions(max_rounds=3, max_tokens=100))
    assert answer.finish_reason == "rounds" and answer.text == "More text. More text. More text."
    generator = ScriptedGenerator([confident] * 5)
    answer = Answerer(generator, Retriever()).answer("q?", flare=FlareOptions(max_rounds=8, max_tokens=6))
    assert answer.finish_reason == "length" and len(answer.generations) == 2
    # the first look-ahead generated 4 tokens (" And" was thrown away), so the second was asked for the 2 left
    assert [g.completion_tokens for g in answer.generations][0] == 4
    assert [kwargs["max_tokens"] for _, kwargs in generator.calls] == [6, 2]


class CountingGenerator(ScriptedGenerator):
    """Counts every token the stream hands out, whatever the answerer keeps or records."""

    generated = 0

    def stream(self, prompt, **kwargs):  # type: ignore[no-untyped-def]
        for chunk in super().stream(prompt, **kwargs):
            self.generated += len(chunk.tokens) if kwargs.get("logprobs") else len(chunk.text.split())
            yield chunk


class NewPassageEachTime:
    """A retriever whose every query finds a passage not yet shown, so every unsure sentence is regenerated."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, query: str) -> tuple[list[Hit], dict[str, float]]:
        self.count += 1
        return [hit(self.count, f"Passage number {self.count}.")], {"total_ms": 1.0}


@pytest.mark.parametrize("query_mode", ["masked", "question"])
def test_max_tokens_bounds_every_token_generated_across_rounds(query_mode):
    # every look-ahead is unsure (p=0.1 < theta) and runs 64 tokens past a 3-word sentence: each round decodes
    # a look-ahead, a regeneration (and in question mode a written query) but keeps 3 tokens. Counting only
    # kept tokens, 32 rounds decoded over 4,000 tokens for max_tokens=256.
    reply = "Alpha beta gamma. " + " ".join(f"w{i}" for i in range(100))
    generator = CountingGenerator(lambda prompt: reply, confidence=0.1)
    answer = Answerer(generator, NewPassageEachTime()).answer(
        "q?", flare=FlareOptions(max_rounds=32, max_tokens=256, lookahead_tokens=64, query_mode=query_mode))
    assert 256 - 64 < generator.generated <= 256
    assert answer.completion_tokens == generator.generated
    assert answer.finish_reason == "length"  # said so: the budget, not the model, ended it
    assert answer.text.startswith("Alpha beta gamma.") and "regenerate" in {g.kind for g in answer.generations}


def test_a_reasoning_answer_keeps_back_its_closing_sentence_within_the_budget():
    def script(prompt):
        closing = isinstance(prompt, list) and prompt[-1]["content"].endswith("So the answer is")
        return " X." if closing else " Alpha beta gamma. " + " ".join(f"w{i}" for i in range(100))

    generator = CountingGenerator(script, confidence=0.1)
    answer = Answerer(generator, NewPassageEachTime(), options=AnswerOptions(style="reasoning")).answer(
        "q?", flare=FlareOptions(max_rounds=32, max_tokens=200))
    assert 200 - 64 < generator.generated <= 200 and answer.final == "X"


def test_a_sentence_of_only_guesses_falls_back_to_the_question():
    replies = [gen((" Zorblax", 0.1), (".", 0.9)), gen((" Nobody", 0.9), (" knows", 0.9), (".", 0.9), finish="stop")]
    retriever = Retriever()
    Answerer(ScriptedGenerator(replies), retriever).answer("Who built it?", flare=FlareOptions())
    assert retriever.queries[1] == "Who built it? ."


def test_question_mode_asks_the_model_for_a_question_per_span():
    replies = [
        gen((" It", 0.9), (" was", 0.9), (" introduced", 0.9), (" by", 0.9), (" Google", 0.1), (".", 0.9)),
        gen((" Which company introduced it?", 0.9), ("\n", 0.9), finish="stop"),
        gen((" It", 0.9), (" was", 0.9), (" vLLM", 0.9), (".", 0.9), finish="stop"),
    ]
    generator = ScriptedGenerator(replies)
    retriever = Retriever()
    answer = Answerer(generator, retriever).answer("Who?", flare=FlareOptions(query_mode="question"))
    assert retriever.queries[1] == "Which company introduced it?"
    assert '"Google"' in generator.calls[1][0][0]["content"]
    assert [g.kind for g in answer.generations] == ["lookahead", "query", "regenerate"]


def test_single_retrieval_streams_the_answer():
    generator = ScriptedGenerator(["Blocks of the KV cache [1]."])
    events: list[AnswerEvent] = []
    answer = Answerer(generator, Retriever(), on_event=events.append).answer("What is paged attention?")
    assert answer.text == "Blocks of the KV cache [1]." and [c.chunk_id for c in answer.citations] == [1]
    assert "".join(e.text for e in events if e.kind == "text") == answer.text
    assert [g.kind for g in answer.generations] == ["answer"]


@pytest.mark.parametrize("failure, error", [(TimeoutError("slow"), UpstreamTimeout),
                                            (ConnectionResetError("gone"), UpstreamError),
                                            (NotFound("model vanished"), UpstreamError)])
def test_a_failing_generator_is_a_bad_gateway(failure, error):
    def script(prompt):
        raise failure

    with pytest.raises(error):
        Answerer(ScriptedGenerator(script), Retriever()).answer("q?", flare=FlareOptions())


@pytest.mark.parametrize("bad", [dict(theta=1.5), dict(beta=-0.1), dict(max_rounds=0), dict(max_rounds=99),
                                 dict(max_tokens=0), dict(query_mode="guess")])
def test_bad_flare_options_are_refused(bad):
    with pytest.raises(InvalidInput):
        FlareOptions(**bad)


def test_empty_question_and_bad_budgets_are_refused():
    with pytest.raises(InvalidInput, match="question is empty"):
        Answerer(ScriptedGenerator([]), Retriever()).answer("   ")
    with pytest.raises(InvalidInput):
        AnswerOptions(context_tokens=4)


def test_an_end_of_turn_token_left_out_of_the_text_is_not_part_of_the_answer():
    tokens = toks((" Blocks", 0.9), (" [1]", 0.9), (".", 0.9), ("<|im_end|>", 0.9))
    reply = Generation(text=" Blocks [1].", tokens=tokens, finish_reason="stop",
                       usage=Usage(prompt_tokens=10, completion_tokens=4))
    answer = Answerer(ScriptedGenerator([reply]), Retriever()).answer("q?", flare=FlareOptions())
    assert answer.text == "Blocks [1]." and answer.finish_reason == "stop"


def test_surer_compares_the_least_likely_word_tokens():
    from ragsvc.answer.flare import surer

    unsure = toks((" Sonic", 0.25), (" the", 0.9), (" Hedgehog", 0.95))
    assert not surer(toks((" Winnie", 0.17), (" the", 0.9), (" Pooh", 0.9)), unsure)
    assert surer(toks((" Winnie", 0.5), (".", 0.01)), unsure)  # punctuation is not judged
    assert not surer(toks((".", 0.9)), unsure)  # a sentence without words never replaces one with words


@pytest.mark.parametrize("flare", [None, FlareOptions()])
def test_a_question_retrieval_finds_nothing_for_is_not_put_to_the_model(flare):
    def nothing(query: str) -> tuple[list[Hit], dict[str, float]]:
        return [], {"total_ms": 1.0}

    generator = ScriptedGenerator([])  # any call would fail: it has no reply to give
    answer = Answerer(generator, nothing).answer("Who built it?", flare=flare)
    assert answer.finish_reason == "no_passages" and answer.text == "" and answer.generations == []
    assert [r.query for r in answer.retrievals] == ["Who built it?"] and answer.passages == []
